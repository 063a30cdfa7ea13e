"""The Label Studio round trip against a real Label Studio 1.23 server (from .venv-labelstudio).

Projects are created from our export with `annotate label-studio`, two raters annotate through the
REST API with their own tokens, the project is exported as JSON, JSON_MIN and CSV, and `annotate import`
gets every rating back under the raters' e-mails, once each. The labeling pages are opened in headless
Chromium with images served by `annotate serve --cors-origin` (screenshots in the test's temp dir).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from wit_retrieval.annotation.app import AppConfig, make_server
from wit_retrieval.annotation.label_studio import LabelStudio
from wit_retrieval.annotation.tasks import read_items
from wit_retrieval.cli import app
from wit_retrieval.io.runs import write_trec

from . import labelstudio_server as lss
from .test_annotation_app import write_store
from .test_annotation_data import make_build, make_run

KINDS = ("ei-correct", "mask-correct", "mmir-answerable", "relevance")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytestmark = [pytest.mark.slow, pytest.mark.labelstudio]


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory):
    """One Label Studio server per session, on a free loopback port with its own data dir."""
    if not lss.LS_BIN.exists():
        if IN_CI:
            pytest.fail(f"{lss.LS_BIN} is missing; `make test` installs Label Studio {lss.LS_VERSION} there")
        pytest.skip(f"Label Studio is not installed in {lss.LS_VENV} (make test installs it: pip install "
                    f"label-studio=={lss.LS_VERSION} into .venv-labelstudio)")
    server = lss.start(tmp_path_factory.mktemp("label-studio"))
    yield server
    server.stop()


def _serve(config: AppConfig):
    server = make_server(config)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def audit(tmp_path_factory, label_studio):
    """An export of every task kind whose images come from our app (CORS for Label Studio's origin)."""
    tmp = tmp_path_factory.mktemp("audit")
    root = make_build(tmp / "build")
    run = tmp / "run.trec"
    write_trec(make_run(root), run, tag="test")
    port = lss.free_port()
    out = tmp / "audit"
    args = ["annotate", "export", str(root.root), "--out", str(out), "--n", "3", "--overlap", "2", "--run", str(run),
            "--image-base-url", f"http://127.0.0.1:{port}/image/"]
    for kind in KINDS:
        args += ["--task", kind]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    items = read_items(out / "items.jsonl")
    image_ids = sorted({i for item in items for i in item.image_urls()})
    write_store(tmp / "images", image_ids)
    server = _serve(AppConfig(db=tmp / "app.sqlite", items=out, images=tmp / "images", port=port,
                              cors_origins=(label_studio.url,)))
    yield out, items
    server.shutdown()
    server.server_close()


def _client(n: int, server) -> LabelStudio:
    return LabelStudio(server.url, lss.RATERS[n][2])


def _tasks(client: LabelStudio, project: int) -> list[dict]:
    answer = client.request("GET", f"/api/tasks?project={project}&page_size=1000")
    return answer["tasks"] if isinstance(answer, dict) else answer


def _answer(item_id: str, rater: int, labels: list[str]) -> str:
    return labels[(sum(map(ord, item_id)) + rater) % len(labels)]


def _annotate(server, project: int, tag: str = "label") -> dict[tuple[str, str], str]:
    """Both raters answer every task with their own tokens; (item_id, e-mail) -> label."""
    given = {}
    for n, (email, _, _) in enumerate(lss.RATERS):
        client = _client(n, server)
        for task in _tasks(client, project):
            labels = task["data"]["labels"].split("|")
            label = _answer(task["data"]["item_id"], n, labels)
            client.request("POST", f"/api/tasks/{task['id']}/annotations", {"result": [
                {"from_name": tag, "to_name": "images", "type": "choices", "value": {"choices": [label]}}]})
            given[(task["data"]["item_id"], email)] = label
    return given


def _exports(client: LabelStudio, project: int, folder: Path) -> list[Path]:
    """JSON as the UI's Export dialog writes it (a snapshot, raters with e-mails), JSON_MIN and CSV
    from the direct export API (raters as numeric ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    snapshot = client.request("POST", f"/api/projects/{project}/exports",
                              {"serialization_options": {"annotations__completed_by": {"only_id": False}}})
    for _ in range(120):
        if client.request("GET", f"/api/projects/{project}/exports/{snapshot['id']}")["status"] == "completed":
            break
        time.sleep(0.25)
    paths = {"JSON": folder / "export.json", "JSON_MIN": folder / "export-min.json", "CSV": folder / "export.csv"}
    data = client.request("GET", f"/api/projects/{project}/exports/{snapshot['id']}/download?exportType=JSON")
    paths["JSON"].write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    for fmt in ("JSON_MIN", "CSV"):
        paths[fmt].write_bytes(client.export(project, fmt))
    return list(paths.values())


@pytest.fixture(scope="module")
def projects(audit, label_studio):
    """One project per task kind, made by `annotate label-studio`; kind -> project id."""
    out, _ = audit
    made = {}
    for kind in KINDS:
        result = CliRunner().invoke(app, ["annotate", "label-studio", str(out), "--url", label_studio.url,
                                          "--task", kind], env={"LABEL_STUDIO_API_KEY": lss.RATERS[0][2]})
        assert result.exit_code == 0, result.output
        made[kind] = int(result.output.split("created project ")[1].split(":")[0])
        assert "2 annotations per task" in result.output
    return made


def test_round_trip_every_rating_comes_back_once_under_the_raters_emails(tmp_path, audit, projects, label_studio):
    out, items = audit
    owner = _client(0, label_studio)
    for kind, project in projects.items():
        settings = owner.request("GET", f"/api/projects/{project}")
        assert settings["maximum_annotations"] == 2 and settings["overlap_cohort_percentage"] == 100
        kind_items = [i for i in items if i.task_kind == kind]
        assert len(_tasks(owner, project)) == len(kind_items) and any(i.is_gold for i in kind_items)
        given = _annotate(label_studio, project)
        files = _exports(owner, project, tmp_path / kind)
        ratings = tmp_path / f"{kind}.parquet"
        result = CliRunner().invoke(app, ["annotate", "import", *map(str, files), "--items", str(out / "items.jsonl"),
                                          "--out", str(ratings)])
        assert result.exit_code == 0, result.output
        rows = pq.read_table(ratings).to_pylist()
        # every rating, once (JSON, JSON_MIN and CSV name the same people), under the raters' e-mails
        assert {(r["item_id"], r["rater"]): r["label"] for r in rows} == given
        assert len(rows) == len(given) == 2 * len(kind_items)
        gold = {i.item_id for i in kind_items if i.is_gold}
        assert {r["item_id"] for r in rows if r["is_gold"]} == gold and all(r["source"] == "label-studio" for r in rows)
        # each file alone: every rating too (numeric ids without the JSON's e-mails stay label-studio:<id>)
        for path, raters in zip(files, ({"rater1@example.org", "rater2@example.org"},
                                        {"label-studio:1", "label-studio:2"}, {"label-studio:1", "label-studio:2"})):
            alone = CliRunner().invoke(app, ["annotate", "import", str(path), "--items", str(out / "items.jsonl"),
                                             "--out", str(tmp_path / "alone.parquet")])
            assert alone.exit_code == 0 and f"wrote {len(given)} ratings" in alone.output, (path.name, alone.output)
            alone_rows = pq.read_table(tmp_path / "alone.parquet").to_pylist()
            assert {r["rater"] for r in alone_rows} == raters, path.name
            assert sorted(r["label"] for r in alone_rows) == sorted(given.values()), path.name
    # without --items the gold items would be counted as data: refused
    refused = CliRunner().invoke(app, ["annotate", "import", str(files[0]), "--out", str(tmp_path / "x.parquet")])
    assert refused.exit_code != 0 and "--items" in refused.output and not (tmp_path / "x.parquet").exists()


def test_a_renamed_choices_tag_is_an_error_naming_it(tmp_path, audit, label_studio):
    out, _ = audit
    config = (out / "label_studio" / "ei-correct.config.xml").read_text().replace('name="label"', 'name="verdict"')
    owner = _client(0, label_studio)
    project = owner.create_project("renamed tag", config)
    owner.import_tasks(project, json.loads((out / "label_studio" / "ei-correct.tasks.json").read_text())[:2])
    _annotate(label_studio, project, tag="verdict")
    for path in _exports(owner, project, tmp_path):
        result = CliRunner().invoke(app, ["annotate", "import", str(path), "--items", str(out / "items.jsonl"),
                                          "--out", str(tmp_path / "r.parquet")])
        assert result.exit_code != 0 and "verdict" in result.output, (path.name, result.output)
        assert "0 ratings" not in result.output and not (tmp_path / "r.parquet").exists()


VIEW_JS = r"""
const imgs = [...document.querySelectorAll('.wr-figures img')];
const captions = [...document.querySelectorAll('.wr-figures figcaption')].map(c => c.textContent);
const choices = [...document.querySelectorAll('.lsf-choice, .ant-checkbox-wrapper')]
  .filter(e => e.offsetParent && !e.parentElement.closest('.lsf-choice, .ant-checkbox-wrapper'));
const text = document.querySelector('mark.mask, mark.mention');
return {images: imgs.map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width]),
        captions: captions, viewport: window.innerHeight,
        choices: choices.map(c => [c.textContent.trim().replace(/\[\d+\]$/, ''), c.getBoundingClientRect().bottom]),
        text: text ? text.closest('div').textContent : null,
        busy: [...document.querySelectorAll('[class*="loading"], [class*="spinner"], [class*="spin"]')]
          .filter(e => e.offsetParent && e.getBoundingClientRect().width > 0).map(e => String(e.className))};
"""


@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="needs Debian's chromium and chromium-driver")
def test_labeling_pages_show_every_image_captioned_with_the_answers_in_view(tmp_path, audit, projects, label_studio):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from .test_annotation_browser import chromium

    driver = chromium(tmp_path / "chromium-profile")
    try:
        driver.set_page_load_timeout(90)
        driver.set_window_size(1280, 900)
        driver.get(label_studio.url + "/user/login/")
        driver.find_element(By.NAME, "email").send_keys(lss.RATERS[0][0])
        driver.find_element(By.NAME, "password").send_keys(lss.RATERS[0][1])
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit], form input[type=submit]").click()
        WebDriverWait(driver, 30).until(lambda d: "/user/login" not in d.current_url)
        owner = _client(0, label_studio)
        _, items = audit
        for kind, project in projects.items():
            task = _tasks(owner, project)[0]
            item = next(i for i in items if i.item_id == task["data"]["item_id"])
            driver.get(f"{label_studio.url}/projects/{project}/data?task={task['id']}")

            def ready(d):
                view = d.execute_script(VIEW_JS)
                loaded = view["images"] and all(done and width > 0 for done, width, _ in view["images"])
                return view if loaded and view["choices"] and not view["busy"] else False

            try:
                view = WebDriverWait(driver, 60).until(ready)
            finally:
                driver.save_screenshot(str(tmp_path / f"{kind}.png"))
            shown = len(item.entities) + bool(item.reference) + bool(item.candidate)
            assert len(view["images"]) == shown, view  # every image at once, not "1 of n"
            assert all(width <= 320 for _, _, width in view["images"]), view  # small images keep their size
            for e in item.entities:
                assert any(c.startswith(f"[MASK_{e['mask']}]") for c in view["captions"]), view
            labels = task["data"]["labels"].split("|")
            assert [c for c, _ in view["choices"]] == labels, view
            assert not view["busy"], view  # nothing left loading (an empty HyperText spins forever)
            assert all(bottom <= view["viewport"] for _, bottom in view["choices"]), view  # answers in view
            if kind == "ei-correct":
                assert item.title in driver.find_element(By.TAG_NAME, "body").text
            else:
                assert view["text"] and "harbour" in view["text"], view
            # the images really come from our app, cross-origin, with CORS for Label Studio's origin only
            src = driver.execute_script("return document.querySelector('.wr-figures img').src")
            status = driver.execute_async_script(
                "const done = arguments[1]; fetch(arguments[0], {mode: 'cors'}).then(r => done(r.status))"
                ".catch(e => done(String(e)));", src)
            assert status == 200, status
    finally:
        driver.quit()
