"""Template personas for the demo world: who is shopping, and what they care about.

Why templates that echo the catalog's vocabulary: the demo teacher scores persona text
against product titles with a sentence encoder, so personas must mention things titles
mention (motifs, articles, colours) directly ("loves cats") or by association ("a
gardener", "bakes on Sundays"). Mixing the two keeps the task learnable but not trivial.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from distill.world.catalog import ARTICLES, COLOURS, indefinite, motif_icons

FIRST_NAMES: tuple[str, ...] = (
    "Lori", "Amara", "Ben", "Chen", "Dara", "Elif", "Farah", "Gustavo", "Hana", "Ivan", "Jonas", "Kemi",
    "Lucia", "Mateo", "Nadia", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tomas", "Uma", "Viktor", "Wen",
    "Ximena", "Yusuf", "Zoe", "Aiko", "Bruno", "Carmen", "Dmitri", "Esther", "Felix", "Greta", "Hugo",
    "Ines", "Jamal", "Kai", "Leila", "Marco", "Nora", "Oskar", "Paula", "Ravi", "Sofia", "Theo", "Valeria",
)

TRAITS: tuple[str, ...] = (
    "reserved", "cheerful", "curious", "meticulous", "adventurous", "laid-back", "witty", "thoughtful",
    "energetic", "quiet", "sentimental", "practical", "playful", "ambitious", "patient", "nostalgic",
    "outgoing", "artistic", "down-to-earth", "eccentric",
)

# (occupation, what they do): each evokes some motifs without naming a product.
OCCUPATIONS: tuple[tuple[str, str], ...] = (
    ("mechanic", "restores old motorbikes"),
    ("nurse", "works night shifts at the hospital"),
    ("chef", "runs a small noodle bar"),
    ("baker", "gets up at four to bake bread and croissants"),
    ("gardener", "grows roses and tulips"),
    ("marine biologist", "studies octopuses and coral reefs"),
    ("pilot", "flies small airplanes"),
    ("astronomer", "watches the night sky through a telescope"),
    ("music teacher", "plays the violin and the piano"),
    ("barista", "makes coffee and bubble tea all day"),
    ("veterinarian", "looks after dogs, cats and horses"),
    ("farmer", "keeps cows, chickens and pigs"),
    ("software engineer", "spends the day at a laptop"),
    ("carpenter", "builds furniture with a saw and a hammer"),
    ("librarian", "is surrounded by books"),
    ("firefighter", "drives the fire engine"),
    ("train driver", "drives high-speed trains"),
    ("sailor", "lives on a sailboat"),
    ("zookeeper", "feeds the giraffes and zebras"),
    ("beekeeper", "tends honeybees and jars honey"),
    ("florist", "arranges bouquets of sunflowers and hibiscus"),
    ("scientist", "works with microscopes and test tubes"),
    ("photographer", "never goes anywhere without a camera"),
    ("football coach", "trains a youth soccer team"),
    ("tennis player", "is on the court every morning"),
    ("DJ", "plays records with big headphones"),
    ("fisherman", "goes out fishing before dawn"),
    ("park ranger", "guards a national park full of bears and deer"),
    ("pastry chef", "makes cupcakes, doughnuts and cookies"),
    ("sushi chef", "prepares sushi and bento boxes"),
    ("wine merchant", "tastes wine for a living"),
    ("teacher", "teaches a class of eight-year-olds"),
    ("illustrator", "draws with crayons and a paintbrush"),
    ("game designer", "designs video games and board games"),
    ("mountain guide", "leads hikes up snow-capped mountains"),
    ("taxi driver", "drives a taxi through the city"),
    ("dentist", "fixes teeth"),
    ("plumber", "fixes pipes and toilets"),
    ("magician", "performs with a magic wand and a top hat"),
    ("surf instructor", "lives for the waves"),
)

# Hobbies as verb phrases ("who ..."); each points at a handful of motifs.
HOBBIES: tuple[str, ...] = (
    "loves gardening", "grows vegetables on an allotment", "keeps houseplants and cacti",
    "is a devoted cat lover", "adores dogs", "has three rabbits", "rides horses at the weekend",
    "watches birds at dawn", "collects seashells", "keeps tropical fish", "is fascinated by insects",
    "loves dinosaurs", "is crazy about penguins", "volunteers at an animal shelter",
    "bakes sourdough on Sundays", "loves baking cakes", "cooks spicy curries", "eats pizza every Friday",
    "is a coffee addict", "drinks green tea", "makes cocktails for friends", "brews beer at home",
    "has a sweet tooth", "loves fresh fruit", "is vegetarian and loves avocados", "grills burgers in summer",
    "loves sushi", "makes ice cream", "hikes in the mountains", "goes camping in a tent",
    "spends summers at the beach", "loves stargazing", "follows the phases of the moon", "chases rainbows",
    "loves snowy winters", "travels the world", "rides a bicycle everywhere", "loves vintage cars",
    "is obsessed with trains", "builds model airplanes", "dreams of space travel and rockets",
    "sails on weekends", "plays football", "plays basketball", "plays tennis", "goes skiing every winter",
    "plays golf", "does martial arts", "skateboards", "goes fishing", "plays chess", "plays video games",
    "loves board games and dice", "does jigsaw puzzles", "plays the guitar", "plays the drums",
    "sings karaoke", "plays the saxophone in a jazz band", "listens to music all day", "loves the cinema",
    "loves the theatre", "paints watercolours", "knits scarves", "sews clothes by hand",
    "reads books on the train", "writes poetry with a fountain pen", "loves science experiments",
    "tinkers with tools", "loves magic tricks", "celebrates Halloween in style", "loves Christmas",
    "throws great birthday parties", "loves fireworks", "flies kites", "collects crystals and gems",
)

RELATIONS: tuple[str, ...] = (
    "mother", "father", "grandmother", "grandfather", "sister", "brother", "best friend", "daughter",
    "son", "niece", "nephew", "aunt", "uncle", "wife", "husband", "girlfriend", "boyfriend", "colleague",
    "neighbour", "teenage son", "little daughter", "mentor",
)

OCCASIONS: tuple[str, ...] = (
    "birthday", "Christmas", "graduation", "retirement", "housewarming", "Mother's Day", "Father's Day",
    "anniversary", "Valentine's Day", "farewell", "new job", "Secret Santa",
)

TEMPLATES: tuple[str, ...] = (
    "A gift for a {relation} who {hobby}",
    "{name}, a {trait} {occupation} who {job} and likes the colour {colour}",
    "A {occasion} present for my {relation}, a {occupation} who {hobby}",
    "{name} is a {trait} {occupation} who {hobby} and wants a new {article}",
    "Something {colour} for a {relation} who {hobby}",
    "{name}, {age}, {hobby} and adores anything with {motif} on it",
    "A {trait} {occupation} who {job}; favourite colour {colour}",
    "My {relation} {hobby} and always carries a {article}",
    "{name}, a {trait} student who {hobby}",
    "A {occasion} gift for someone who is crazy about {motif_plural}",
)


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def plural(noun: str) -> str:
    """Naive English plural of an emoji name ('owl' -> 'owls', 'cherries' stays)."""
    if noun.endswith("s"):
        return noun  # mostly already plural: grapes, fireworks, french fries
    if noun.endswith(("x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def _persona_id(text: str) -> str:
    """Stable id from the text, so the same persona keeps its id across seeds and sizes."""
    return "u-" + hashlib.sha1(text.encode()).hexdigest()[:12]


def _fill(template: str, rng: np.random.Generator) -> str:
    motif = motif_icons()[int(rng.integers(len(motif_icons())))]
    occupation, job = OCCUPATIONS[int(rng.integers(len(OCCUPATIONS)))]
    values = {
        "name": FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))],
        "trait": TRAITS[int(rng.integers(len(TRAITS)))],
        "occupation": occupation,
        "job": job,
        "hobby": HOBBIES[int(rng.integers(len(HOBBIES)))],
        "relation": RELATIONS[int(rng.integers(len(RELATIONS)))],
        "occasion": OCCASIONS[int(rng.integers(len(OCCASIONS)))],
        "colour": sorted(COLOURS)[int(rng.integers(len(COLOURS)))],
        "article": ARTICLES[int(rng.integers(len(ARTICLES)))].name,
        "age": str(int(rng.integers(16, 80))),
        "motif": indefinite(motif.name),
        "motif_plural": plural(motif.name),
    }
    text = _A_BEFORE_VOWEL.sub(lambda m: m.group(1) + "n ", template.format(**values))
    return text[0].upper() + text[1:]


def draw_personas(seed: int, n_personas: int,
                  split_fractions: tuple[float, float, float]) -> list[tuple[str, str, str]]:
    """``n_personas`` distinct (persona_id, text, split) rows, deterministic in ``seed``.

    Templates are drawn round-robin so every kind of persona appears in every split; the
    split is a seeded shuffle cut by ``split_fractions`` (exact counts, not per-row coins).
    """
    rng = np.random.default_rng([seed, 2])
    texts: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(texts) < n_personas:
        attempts += 1
        if attempts > 50 * n_personas + 1000:
            raise ValueError(f"cannot draw {n_personas} distinct personas from the templates")
        text = _fill(TEMPLATES[len(texts) % len(TEMPLATES)], rng)
        if text not in seen:
            seen.add(text)
            texts.append(text)
    order = np.random.default_rng([seed, 3]).permutation(n_personas)
    fr = np.asarray(split_fractions, dtype=float) / sum(split_fractions)
    n_train = int(round(fr[0] * n_personas))
    n_val = int(round(fr[1] * n_personas))
    split_of = np.empty(n_personas, dtype=object)
    split_of[order[:n_train]] = "train"
    split_of[order[n_train:n_train + n_val]] = "val"
    split_of[order[n_train + n_val:]] = "test"
    return [(_persona_id(t), t, str(s)) for t, s in zip(texts, split_of)]
