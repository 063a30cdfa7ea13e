"""Words of the miniature world per language: colours, shapes, kinds, relations, settings.

Entity names are composed from these (colour x shape, with adjective / place / numeral
variants), so they scale to 100k distinct names and read the same way the icons look.
German gets its own words (compounds: "Karminstern" for "Crimson Star") and its own
templates, so the two languages' titles and descriptions differ for the same QID.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

# (English, German, RGB): twelve colours far apart from each other on a light background.
COLOURS = (
    ("Crimson", "Karmin", (200, 16, 46)),
    ("Azure", "Azur", (0, 110, 255)),
    ("Amber", "Bernstein", (255, 190, 0)),
    ("Jade", "Jade", (0, 160, 80)),
    ("Violet", "Violett", (140, 40, 220)),
    ("Ebony", "Ebenholz", (35, 35, 35)),
    ("Copper", "Kupfer", (184, 100, 40)),
    ("Rose", "Rosen", (255, 105, 180)),
    ("Turquoise", "Türkis", (64, 224, 208)),
    ("Olive", "Oliv", (128, 128, 0)),
    ("Indigo", "Indigo", (40, 40, 140)),
    ("Silver", "Silber", (160, 160, 160)),
)

# (English, German compound tail): the drawable shapes (draw.py knows how to draw each).
SHAPES = (
    ("Star", "stern"), ("Ring", "ring"), ("Cross", "kreuz"), ("Diamond", "raute"),
    ("Triangle", "dreieck"), ("Square", "quadrat"), ("Disc", "scheibe"), ("Hexagon", "sechseck"),
    ("Crescent", "mond"), ("Arrow", "pfeil"), ("Heart", "herz"), ("Shield", "schild"),
)

# Patterns drawn inside a shape in an accent colour; "plain" draws none.
PATTERNS = ("plain", "stripes", "bars", "diagonal", "dots", "checks", "grid", "rings")
ACCENTS = (
    (255, 255, 255), (0, 0, 0), (255, 215, 0), (135, 206, 235), (50, 205, 50), (255, 0, 255),
)

# (English, German prefix): name variants; German joins with a hyphen to avoid declension.
ADJECTIVES = (
    ("Great", "Groß"), ("Little", "Klein"), ("Old", "Alt"), ("New", "Neu"), ("Northern", "Nord"),
    ("Southern", "Süd"), ("Eastern", "Ost"), ("Western", "West"), ("Upper", "Ober"),
    ("Lower", "Unter"), ("High", "Hoch"), ("Royal", "Königs"),
)

# Invented places, the same in both languages; some carry apostrophes and diacritics on purpose.
PLACES = (
    "Velmora", "Ostrand", "Brivik", "Calder", "Dunmere", "Eskaro", "Farnholm", "Galvany",
    "Harrowgate", "Ilsen", "Jorvale", "Kestrel Bay", "Lunmark", "Marrow", "Nereth", "Orlain",
    "Port d'Amber", "Quillon", "Rasmere", "Saint-Évry", "Tarnow", "Ulvik", "Vessa", "Wendle",
    "Yarrow", "Zell", "Åsby", "Mirefield", "O'Kell", "Brønstad",
)

ROMAN = ("II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII", "XIV", "XV",
         "XVI", "XVII", "XVIII", "XIX", "XX")

# (English, English with article, German, German with article): what an entity is; the
# qualifier of ambiguous titles ("Crimson Star (emblem)") and the subject of page intros.
KINDS = (
    ("emblem", "an emblem", "Emblem", "ein Emblem"), ("river", "a river", "Fluss", "ein Fluss"),
    ("ship", "a ship", "Schiff", "ein Schiff"), ("festival", "a festival", "Fest", "ein Fest"),
    ("mountain", "a mountain", "Berg", "ein Berg"), ("tower", "a tower", "Turm", "ein Turm"),
    ("order", "an order", "Orden", "ein Orden"), ("band", "a band", "Band", "eine Band"),
    ("island", "an island", "Insel", "eine Insel"),
    ("locomotive", "a locomotive", "Lokomotive", "eine Lokomotive"),
)

# Syllables of invented aliases (redirect titles), e.g. "Orvalen".
SYLLABLES = ("or", "va", "len", "mir", "tas", "ke", "dru", "sel", "an", "ri", "bo", "quen", "lu",
             "fa", "zor", "nel", "ith", "ca", "gar", "we")

RELATIONS = ("left of", "right of", "above", "below", "next to")
SETTINGS = ("dusk", "night", "snow", "forest", "desert", "sea", "fog", "dawn", "meadow", "city")


@dataclass(frozen=True)
class Language:
    """Per-language words and templates of captions, pages and dump namespaces."""

    code: str
    relations: dict[str, str]
    settings: dict[str, str]
    single: str          # "{A} {setting}"
    pair: str            # "{A} {rel} {B} {setting}"
    triple: str          # with {C} and {extra}
    extra_horizontal: str
    extra_vertical: str
    larger: str          # appended clause repeating A
    gallery: str
    intro: str           # first sentence of a page, with {title} and {kind}
    category_ns: str
    file_ns: str
    name: str = ""                       # as WIT attribution descriptions start: "English: ..."
    colours: tuple[str, ...] = ()        # colour words in COLOURS order
    shapes: tuple[str, ...] = ()         # shape words in SHAPES order
    base: str = "{colour} {shape}"       # an entity's base name
    adjectives: tuple[str, ...] = ()     # name variants in ADJECTIVES order, formats of the base
    of_place: str = "{name} of {place}"
    of_place_vowel: str = ""             # for elision before a vowel (French d')
    kinds: tuple[tuple[str, str], ...] = ()  # (noun, noun with article) in KINDS order
    also_called: str = ""                # with {alias}
    many_pictures: str = ""              # second paragraph, with {title}
    paragraph: str = "\n"
    section_pictures: str = ""           # context of gallery sections, with {title}
    geography: str = ""
    shortdesc: str = ""                  # with {kind}
    category: str = ""                   # category page title, with {kind}
    rel2: dict[str, str] | None = None   # second relation word where the template has {rel2}


LANGUAGES = {
    "en": Language(
        code="en",
        relations={r: r for r in RELATIONS},
        settings={"dusk": "at dusk", "night": "at night", "snow": "in the snow", "forest": "in a forest",
                  "desert": "in the desert", "sea": "by the sea", "fog": "in fog", "dawn": "at dawn",
                  "meadow": "on a meadow", "city": "in the city"},
        single="{A} {setting}",
        pair="{A} {rel} {B} {setting}",
        triple="{A} {rel} {B}, with {C} {extra}, {setting}",
        extra_horizontal="above them",
        extra_vertical="to the right",
        larger="; {A} is larger",
        gallery="Gallery",
        intro="{title} is {kind} of the miniature world.",
        category_ns="Category",
        file_ns="File",
        name="English",
        colours=tuple(c[0] for c in COLOURS),
        shapes=tuple(sh[0] for sh in SHAPES),
        adjectives=tuple(f"{a[0]} {{}}" for a in ADJECTIVES),
        kinds=tuple((k[0], k[1]) for k in KINDS),
        also_called=' It is also called "{alias}".',
        many_pictures="{title} appears in many pictures.",
        section_pictures="Pictures of {title} in different settings.",
        geography="Geography",
        shortdesc="{kind} of the miniature world",
        category="Miniature {kind}s",
    ),
    "de": Language(
        code="de",
        relations={"left of": "links von", "right of": "rechts von", "above": "über", "below": "unter",
                   "next to": "neben"},
        settings={"dusk": "in der Abenddämmerung", "night": "bei Nacht", "snow": "im Schnee",
                  "forest": "im Wald", "desert": "in der Wüste", "sea": "am Meer", "fog": "im Nebel",
                  "dawn": "im Morgengrauen", "meadow": "auf einer Wiese", "city": "in der Stadt"},
        single="{A} {setting}",
        pair="{A} {rel} {B} {setting}",
        # German puts the third entity first, so [MASK_0] is not always the scene's first entity.
        triple="Mit {C} {extra}: {A} {rel} {B} {setting}",
        extra_horizontal="darüber",
        extra_vertical="rechts daneben",
        larger="; {A} ist größer",
        gallery="Galerie",
        intro="{title} ist {kind} der Miniaturwelt.",
        category_ns="Kategorie",
        file_ns="Datei",
        name="Deutsch",
        colours=tuple(c[1] for c in COLOURS),
        shapes=tuple(sh[1] for sh in SHAPES),
        base="{colour}{shape}",
        adjectives=tuple(f"{a[1]}-{{}}" for a in ADJECTIVES),
        of_place="{name} von {place}",
        kinds=tuple((k[2], k[3]) for k in KINDS),
        also_called=" Es wird auch „{alias}“ genannt.",
        many_pictures="{title} ist auf vielen Bildern zu sehen.",
        paragraph="\n\n",
        section_pictures="Bilder von {title} in verschiedenen Umgebungen.",
        geography="Geographie",
        shortdesc="{kind} der Miniaturwelt",
        category="Miniatur-{kind}",
    ),
    # French avoids agreement: invariable colour nouns ("Étoile carmin"), hyphenated prefixes,
    # and relations said as positions ("A à gauche, B à droite").
    "fr": Language(
        code="fr",
        relations={"left of": "à gauche", "right of": "à droite", "above": "en haut", "below": "en bas",
                   "next to": "d'un côté"},
        rel2={"left of": "à droite", "right of": "à gauche", "above": "en bas", "below": "en haut",
              "next to": "de l'autre"},
        settings={"dusk": "au crépuscule", "night": "la nuit", "snow": "dans la neige",
                  "forest": "dans une forêt", "desert": "dans le désert", "sea": "au bord de la mer",
                  "fog": "dans le brouillard", "dawn": "à l'aube", "meadow": "sur une prairie",
                  "city": "en ville"},
        single="{A} {setting}",
        pair="{A} {rel}, {B} {rel2}, {setting}",
        triple="{A} {rel}, {B} {rel2}, avec {C} {extra}, {setting}",
        extra_horizontal="au-dessus",
        extra_vertical="à droite",
        larger=" ; {A} est de plus grande taille",
        gallery="Galerie",
        intro="{title} est {kind} du monde miniature.",
        category_ns="Catégorie",
        file_ns="Fichier",
        name="Français",
        colours=("carmin", "azur", "ambre", "jade", "lavande", "ébène", "cuivre", "rose", "turquoise", "olive",
                 "indigo", "argent"),
        shapes=("Étoile", "Anneau", "Croix", "Losange", "Triangle", "Carré", "Disque", "Hexagone", "Croissant",
                "Flèche", "Cœur", "Bouclier"),
        base="{shape} {colour}",
        adjectives=("Grand-{}", "Petit-{}", "Vieux-{}", "Néo-{}", "{} du Nord", "{} du Sud", "{} de l'Est",
                    "{} de l'Ouest", "Haut-{}", "Bas-{}", "{} des Hauteurs", "{} du Roi"),
        of_place="{name} de {place}",
        of_place_vowel="{name} d'{place}",
        kinds=(("emblème", "un emblème"), ("rivière", "une rivière"), ("navire", "un navire"),
               ("festival", "un festival"), ("montagne", "une montagne"), ("tour", "une tour"),
               ("ordre", "un ordre"), ("groupe", "un groupe"), ("île", "une île"),
               ("locomotive", "une locomotive")),
        also_called=" On l'appelle aussi « {alias} ».",
        many_pictures="{title} figure sur de nombreuses images.",
        section_pictures="Images de {title} dans différents décors.",
        geography="Géographie",
        shortdesc="{kind} du monde miniature",
        category="{kind} du monde miniature",
    ),
}


def language(code: str) -> Language:
    """The words of one language; raises ConfigError for a language the world cannot speak."""
    if code not in LANGUAGES:
        raise ConfigError(f"synth: unsupported language {code!r}; supported: {', '.join(LANGUAGES)}")
    return LANGUAGES[code]
