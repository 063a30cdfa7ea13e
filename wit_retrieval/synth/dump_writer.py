"""Wikipedia SQL dumps of the world: page, page_props and redirect tables per language.

MySQL dump text as dumps.wikimedia.org serves it: a header, CREATE TABLE, then
`INSERT INTO `table` VALUES (...),(...);` lines with many tuples each, single-quoted strings
with backslash escapes, NULL. Titles use underscores and carry no namespace prefix.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

from ..io.shards import file_digest
from . import lexicon as lx
from .files import ProgressFn, gzip_text, write_file
from .world import World

TUPLES_PER_INSERT = 250
DUMP_DATE = "20261101"
_ESCAPES = str.maketrans({"\\": "\\\\", "'": "\\'", '"': '\\"', "\n": "\\n", "\r": "\\r", "\0": "\\0",
                          "\x1a": "\\Z"})
_SPECIAL = re.compile("[\\\\'\"\n\r\0\x1a]")

_CREATE = {
    "page": """CREATE TABLE `page` (
  `page_id` int(8) unsigned NOT NULL AUTO_INCREMENT,
  `page_namespace` int(11) NOT NULL DEFAULT 0,
  `page_title` varbinary(255) NOT NULL DEFAULT '',
  `page_is_redirect` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `page_is_new` tinyint(1) unsigned NOT NULL DEFAULT 0,
  `page_random` double unsigned NOT NULL DEFAULT 0,
  `page_touched` binary(14) NOT NULL,
  `page_links_updated` varbinary(14) DEFAULT NULL,
  `page_latest` int(8) unsigned NOT NULL DEFAULT 0,
  `page_len` int(8) unsigned NOT NULL DEFAULT 0,
  `page_content_model` varbinary(32) DEFAULT NULL,
  `page_lang` varbinary(35) DEFAULT NULL,
  PRIMARY KEY (`page_id`),
  UNIQUE KEY `page_name_title` (`page_namespace`,`page_title`),
  KEY `page_random` (`page_random`),
  KEY `page_len` (`page_len`),
  KEY `page_redirect_namespace_len` (`page_is_redirect`,`page_namespace`,`page_len`)
) ENGINE=InnoDB DEFAULT CHARSET=binary ROW_FORMAT=COMPRESSED;""",
    "page_props": """CREATE TABLE `page_props` (
  `pp_page` int(10) unsigned NOT NULL,
  `pp_propname` varbinary(60) NOT NULL,
  `pp_value` blob NOT NULL,
  `pp_sortkey` float DEFAULT NULL,
  PRIMARY KEY (`pp_page`,`pp_propname`),
  UNIQUE KEY `pp_propname_page` (`pp_propname`,`pp_page`),
  UNIQUE KEY `pp_propname_sortkey_page` (`pp_propname`,`pp_sortkey`,`pp_page`)
) ENGINE=InnoDB DEFAULT CHARSET=binary ROW_FORMAT=COMPRESSED;""",
    "redirect": """CREATE TABLE `redirect` (
  `rd_from` int(8) unsigned NOT NULL DEFAULT 0,
  `rd_namespace` int(11) NOT NULL DEFAULT 0,
  `rd_title` varbinary(255) NOT NULL DEFAULT '',
  `rd_interwiki` varbinary(32) DEFAULT NULL,
  `rd_fragment` varbinary(255) DEFAULT NULL,
  PRIMARY KEY (`rd_from`),
  KEY `rd_ns_title` (`rd_namespace`,`rd_title`,`rd_from`)
) ENGINE=InnoDB DEFAULT CHARSET=binary ROW_FORMAT=COMPRESSED;""",
}


def dump_dir(code: str) -> str:
    """Relative folder of a language's dumps (the dumps host's URL path)."""
    return f"{code}wiki/latest"


def sql_value(v) -> str:
    """One value in MySQL dump syntax."""
    if v is None:
        return "NULL"
    if isinstance(v, str):
        return "'" + (v.translate(_ESCAPES) if _SPECIAL.search(v) else v) + "'"
    return repr(v)


def shortdesc(code: str, kind: int) -> str:
    """The short description a page carries (a page_props row that readers must skip)."""
    words = lx.language(code)
    return words.shortdesc.format(kind=words.kinds[kind][0])


def _u(title: str) -> str:
    return title.replace(" ", "_")


def _records(world: World, code: str) -> tuple[list, list, list]:
    """(pages, props, redirects) of one language, before page ids are assigned (ids are indices)."""
    words = lx.language(code)
    pages: list[tuple[int, str, int]] = []  # (namespace, title, is_redirect)
    props: list[tuple[int, str, str]] = []  # (page index, name, value)
    redirects: list[tuple[int, str, str]] = []  # (page index, target title, fragment)

    def add(ns: int, title: str, is_redirect: int = 0) -> int:
        pages.append((ns, _u(title), is_redirect))
        return len(pages) - 1

    def redirect(title: str, target: str, fragment: str = "") -> None:
        redirects.append((add(0, title, 1), _u(target), fragment))

    twins = {m for members in world.ambiguous[code].values() for m in members}
    for e in world.entities:
        if code not in e.titles:
            continue
        title = e.titles[code]
        p = add(0, title)
        props.append((p, "wikibase_item", e.qid))
        if e.image_prop[code] != "none":
            props.append((p, e.image_prop[code], e.file))
        if e.index % 3 == 0:
            props.append((p, "wikibase-shortdesc", shortdesc(code, e.kind)))
        if e.alias:
            redirect(e.alias, title)
        if title != e.names[code] and e.index not in twins:
            redirect(e.names[code], title)  # the bare name of a uniquely qualified title
        if e.index % 20 == 7:
            redirect(f"{e.names[code]} {words.gallery}", title, words.gallery)
        if e.index % 20 == 3:
            add(1, title)  # a talk page with the article's title, in another namespace
        if e.index % 10 == 5:
            add(6, e.file)  # a local File: page
    for k, name in enumerate(sorted(world.ambiguous[code])):
        p = add(0, name)
        props.append((p, "disambiguation", ""))
        props.append((p, "wikibase_item", f"Q{9_000_000 + k}"))
    for kind in sorted({e.kind for e in world.entities}):
        category = words.category.format(kind=words.kinds[kind][0])
        add(14, category[0].upper() + category[1:])  # MediaWiki titles start with a capital
    add(10, "Infobox miniature entity")
    return pages, props, redirects


def _insert_lines(table: str, tuples: list[str]) -> list[str]:
    """INSERT statements of TUPLES_PER_INSERT formatted tuples each."""
    return [f"INSERT INTO `{table}` VALUES " + ",".join(tuples[k:k + TUPLES_PER_INSERT]) + ";\n"
            for k in range(0, len(tuples), TUPLES_PER_INSERT)]


def _page_tuples(pages: list, ids: list[int], rng: random.Random) -> list[str]:
    """Formatted page tuples in page_id order (only titles need escaping; the rest is known-safe)."""
    out, rand = [], rng.random  # random() is several times cheaper than randrange()
    for i in sorted(range(len(pages)), key=ids.__getitem__):
        ns, title, is_redirect = pages[i]
        touched = f"2026{1 + int(rand() * 10):02d}{1 + int(rand() * 28):02d}120000"
        links = "NULL" if i % 11 == 0 else "'20261015000000'"
        length = 40 if is_redirect else 500 + int(rand() * 20000)
        out.append(f"({ids[i]},{ns},{sql_value(title)},{is_redirect},{int(rand() < 0.05)},"
                   f"{round(rand(), 12)!r},'{touched}',{links},{1_200_000_000 + ids[i] * 3},{length},"
                   "'wikitext',NULL)")
    return out


def _write_table(path: Path, code: str, table: str, rows) -> None:
    with gzip_text(path) as f:
        f.write(f"-- MySQL dump 10.19  Distrib 10.3.39-MariaDB, for debian-linux-gnu (x86_64)\n--\n"
                f"-- Host: 10.64.48.0    Database: {code}wiki\n"
                "-- ------------------------------------------------------\n"
                "-- Server version\t10.6.20-MariaDB-log\n\n"
                "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;\n"
                "/*!40101 SET NAMES utf8mb4 */;\n"
                "/*!40103 SET TIME_ZONE='+00:00' */;\n"
                "/*!40014 SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0 */;\n\n"
                f"--\n-- Table structure for table `{table}`\n--\n\n"
                f"DROP TABLE IF EXISTS `{table}`;\n"
                "/*!40101 SET @saved_cs_client     = @@character_set_client */;\n"
                "/*!40101 SET character_set_client = utf8 */;\n"
                f"{_CREATE[table]}\n"
                "/*!40101 SET character_set_client = @saved_cs_client */;\n\n"
                f"--\n-- Dumping data for table `{table}`\n--\n\n"
                f"/*!40000 ALTER TABLE `{table}` DISABLE KEYS */;\n")
        f.writelines(_insert_lines(table, rows))
        f.write(f"/*!40000 ALTER TABLE `{table}` ENABLE KEYS */;\n"
                "/*!40103 SET TIME_ZONE=@OLD_TIME_ZONE */;\n\n"
                f"-- Dump completed on {DUMP_DATE[:4]}-{DUMP_DATE[4:6]}-{DUMP_DATE[6:]}  0:00:00\n")


def write_dumps(world: World, out: Path, progress: ProgressFn | None = None) -> dict:
    """Write page, page_props, redirect dumps and md5sums per dump language; returns files and counts."""
    files, counts = [], {}
    for code in world.config.dump_langs:
        pages, props, redirects = _records(world, code)
        rng = random.Random(f"{world.config.seed}:dump:{code}")
        order = list(range(len(pages)))
        rng.shuffle(order)
        ids = [0] * len(pages)
        next_id = 10 + rng.randrange(90)
        for idx in order:  # increasing ids with gaps, in a shuffled order of the records
            ids[idx] = next_id
            next_id += 1 + int(rng.random() * 3)
        page_rows = _page_tuples(pages, ids, rng)
        prop_rows = [f"({pid},'{name}',{sql_value(value)},NULL)"
                     for pid, name, value in sorted((ids[p], name, value) for p, name, value in props)]
        redirect_rows = [f"({pid},0,{sql_value(target)},'',{sql_value(fragment)})"
                         for pid, target, fragment in sorted((ids[p], t, f) for p, t, f in redirects)]
        base = dump_dir(code)
        names = []
        for table, rows in (("page", page_rows), ("page_props", prop_rows), ("redirect", redirect_rows)):
            name = f"{code}wiki-latest-{table}.sql.gz"
            _write_table(out / base / name, code, table, rows)
            names.append(name)
            files.append(f"{base}/{name}")
        # Like the real list: dated names (latest/ links to them) and files this world does not have.
        listed = [(file_digest(out / base / n, "md5"), n.replace("-latest-", f"-{DUMP_DATE}-")) for n in names]
        listed.append((hashlib.md5(f"{code}:categorylinks".encode()).hexdigest(),
                       f"{code}wiki-{DUMP_DATE}-categorylinks.sql.gz"))
        sums = "".join(f"{digest}  {name}\n" for digest, name in sorted(listed, key=lambda x: x[1]))
        write_file(out / base / f"{code}wiki-latest-md5sums.txt", sums.encode())
        files.append(f"{base}/{code}wiki-latest-md5sums.txt")
        counts[code] = {"pages": len(page_rows), "page_props": len(prop_rows), "redirects": len(redirect_rows)}
        if progress:
            progress("Wikipedia dumps", 1, len(world.config.dump_langs))
    return {"files": files, "counts": counts}
