"""The tabular triage pipeline's stages, its data split and its cached models.

    features ─┬─> risk ─┬─(unsure)──> mc_mlp ──┐
              │         └──────────────────────┼──> combine
              └─> explain ─────────────────────┘

A row of 30 cell-nucleus measurements (scikit-learn's bundled breast cancer data set) is
standardised and projected by PCA (``features``). Gradient-boosted trees give a risk
score (``risk``); only when the trees are unsure (``RiskTrees.route``) does a slower
MC-dropout MLP run ``MC_PASSES`` stochastic passes for a second opinion with an
uncertainty (``mc_mlp``). In parallel a logistic regression explains the row by its
per-feature contributions (``explain``); ``combine`` joins the branches into one triage
decision.

All models are trained on the training split the first time a replica needs them (about
2 s), with fixed seeds on one thread, and cached in a user cache folder, outside the
checkout (``CACHE``). Sample queries are rows of the held-out test split.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import pickle
import random
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from inferline.engine import StageModel, TensorSpec

#: Trained models live here, not in the checkout; INFERLINE_EXAMPLES_CACHE overrides it.
CACHE = (
    Path(
        os.environ.get("INFERLINE_EXAMPLES_CACHE")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inferline"
    )
    / "tabular-triage"
)

N_FEATURES = 30
TEST_FRACTION = 0.25
SPLIT_SEED = 0
SAMPLE_SEED = 0
#: Everything training depends on; part of the cache key, so a change retrains.
TRAINING: dict[str, Any] = {
    "version": 3,
    "pca_components": 8,
    "trees": {"n_estimators": 150, "max_depth": 2, "learning_rate": 0.05, "subsample": 0.8},
    "linear": {"C": 1.0},
    "mlp": {
        "hidden": 512,
        "layers": 3,
        "dropout": 0.3,
        "epochs": 100,
        "lr": 0.001,
        "weight_decay": 0.01,
    },
}
#: The trees are unsure when the likelier class has less than this probability: about
#: 20 % of the test rows then go on to the MC-dropout MLP (README.md).
UNSURE_BELOW = 0.92
#: Stochastic forward passes per row in ``mc_mlp``: its cost is linear in this.
MC_PASSES = 128
#: Contributions ``explain`` returns, largest magnitude first.
TOP_FEATURES = 3
#: Risk of malignancy from which a case is referred at once.
REFER_AT = 0.5
#: After the MLP, a case whose risk is this close to REFER_AT, or whose MC spread is at
#: least SPREAD_REVIEW, goes to a second reader instead.
BORDERLINE = 0.25
SPREAD_REVIEW = 0.15

# --- data ------------------------------------------------------------------------------------


class Split(NamedTuple):
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray  # 1 = malignant (scikit-learn's target 0), 0 = benign
    y_test: np.ndarray
    feature_names: tuple[str, ...]


@functools.cache
def data_split() -> Split:
    """The bundled data set (no download), split 75/25, stratified, seeded."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    data = load_breast_cancer()
    malignant = (data.target == 0).astype(np.int64)  # scikit-learn: 0 = malignant
    x_train, x_test, y_train, y_test = train_test_split(
        data.data,
        malignant,
        test_size=TEST_FRACTION,
        stratify=malignant,
        random_state=SPLIT_SEED,
    )
    names = tuple(str(n) for n in data.feature_names)
    return Split(x_train, x_test, y_train, y_test, names)


class Sample(NamedTuple):
    """A sample query: one test row and whether the tumour was malignant."""

    row: np.ndarray
    malignant: int


def samples(n: int, seed: int = SAMPLE_SEED) -> list[Sample]:
    """``n`` test rows in a seeded order (the models never saw them); repeats after 143."""
    split = data_split()
    order = list(range(len(split.y_test)))
    random.Random(f"samples-{seed}").shuffle(order)
    return [
        Sample(split.x_test[order[i % len(order)]], int(split.y_test[order[i % len(order)]]))
        for i in range(n)
    ]


def request_body(row: np.ndarray) -> dict[str, Any]:
    """The OIP V2 infer request for one row of measurements."""
    data = [float(v) for v in np.asarray(row, dtype=np.float64).reshape(-1)]
    return {
        "inputs": [
            {"name": "measurements", "shape": [N_FEATURES], "datatype": "FP64", "data": data}
        ]
    }


# --- the models and their cache --------------------------------------------------------------


def cached(path: Path, build: Callable[[Path], None]) -> Path:
    """Build ``path`` once even when several replica processes start together: the first
    to take the lock builds into a temporary file and renames it into place."""
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


def models_path() -> Path:
    """The artefact's file; its key changes with the settings and the library versions
    (read from the installed metadata: importing torch here would cost every stage ~2 s)."""
    versions = [metadata.version(name) for name in ("scikit-learn", "torch", "numpy")]
    key = json.dumps([TRAINING, SPLIT_SEED, TEST_FRACTION, versions])
    return CACHE / f"models-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pkl"


def build_mlp(weights: list[np.ndarray] | None = None) -> Any:
    """The MLP: ``layers`` hidden ReLU layers with dropout, one logit (malignant)."""
    import torch

    settings = TRAINING["mlp"]
    layers: list[Any] = []
    width = N_FEATURES
    for _ in range(settings["layers"]):
        layers += [
            torch.nn.Linear(width, settings["hidden"]),
            torch.nn.ReLU(),
            torch.nn.Dropout(settings["dropout"]),
        ]
        width = settings["hidden"]
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))
    if weights is not None:
        params = list(net.parameters())
        with torch.no_grad():
            for param, value in zip(params, weights, strict=True):
                param.copy_(torch.from_numpy(value))
    return net


def _train_mlp(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Full-batch Adam on one thread, seeded: the same weights in every replica."""
    import torch

    settings = TRAINING["mlp"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(SPLIT_SEED)
        net = build_mlp()
        optimiser = torch.optim.Adam(
            net.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
        )
        inputs = torch.from_numpy(x.astype(np.float32))
        target = torch.from_numpy(y.astype(np.float32)).view(-1, 1)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        net.train()
        for _ in range(settings["epochs"]):
            optimiser.zero_grad()
            loss_fn(net(inputs), target).backward()
            optimiser.step()
        return [p.detach().numpy().copy() for p in net.parameters()]
    finally:
        torch.set_num_threads(threads)


def _train(target: Path) -> None:
    from sklearn.decomposition import PCA
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    started = time.perf_counter()
    split = data_split()
    scaler = StandardScaler().fit(split.x_train)
    x_train, x_test = scaler.transform(split.x_train), scaler.transform(split.x_test)
    pca = PCA(n_components=TRAINING["pca_components"], random_state=SPLIT_SEED).fit(x_train)
    trees = GradientBoostingClassifier(random_state=SPLIT_SEED, **TRAINING["trees"])
    trees.fit(pca.transform(x_train), split.y_train)
    linear = LogisticRegression(max_iter=2000, **TRAINING["linear"]).fit(x_train, split.y_train)
    z_test = pca.transform(x_test)
    artefact = {
        "test_accuracy": {
            "trees": float(np.mean(trees.predict(z_test) == split.y_test)),
            "linear": float(np.mean(linear.predict(x_test) == split.y_test)),
        },
        "scaler": scaler,
        "pca": pca,
        "trees": trees,
        "linear": linear,
        "mlp": _train_mlp(x_train, split.y_train),
        "train_s": round(time.perf_counter() - started, 2),
    }
    with target.open("wb") as f:
        pickle.dump(artefact, f)


@functools.cache
def load_models() -> dict[str, Any]:
    """The trained models (``scaler``, ``pca``, ``trees``, ``linear``, ``mlp`` weights),
    trained and cached if absent."""
    with cached(models_path(), _train).open("rb") as f:
        artefact: dict[str, Any] = pickle.load(f)
    return artefact


def mc_dropout(net: Any, x: np.ndarray, passes: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the malignancy probability over ``passes`` forward
    passes with dropout on, all rows and passes in one matrix product chain."""
    import torch

    net.train()  # dropout stays active: each pass samples another sub-network
    with torch.no_grad():
        rows = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        prob = torch.sigmoid(net(rows.repeat_interleave(passes, dim=0))).view(len(x), passes)
    return prob.mean(dim=1).numpy().astype(np.float64), prob.std(dim=1).numpy().astype(np.float64)


def is_unsure(risk: float) -> bool:
    """The routing rule: the trees' likelier class is below UNSURE_BELOW."""
    return max(risk, 1.0 - risk) < UNSURE_BELOW


def triage(risk: float, spread: float, second_opinion: bool) -> str:
    """``refer`` (likely malignant), ``review`` (a second reader), ``routine``."""
    if second_opinion and (abs(risk - REFER_AT) < BORDERLINE or spread >= SPREAD_REVIEW):
        return "review"
    return "refer" if risk >= REFER_AT else "routine"


def _threads(default: int) -> int:
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", default)))
    except ValueError:
        return max(1, default)


# --- the stages ------------------------------------------------------------------------------


def preload_models() -> None:
    """For a stage's template: unpickle the cached models once, so that replicas forked
    from it (scale-ups) share them read-only. Never trains here: training starts torch's
    thread pool, which must not be inherited by a fork; ``setup`` trains if needed."""
    if models_path().exists():
        load_models()


class _SklearnStage(StageModel):
    @classmethod
    def preload(cls) -> None:
        preload_models()


class Features(_SklearnStage):
    """Raw measurements → standardised row and its PCA projection, one call per batch."""

    inputs: ClassVar[tuple[TensorSpec, ...]] = (TensorSpec("measurements", "FP64", (N_FEATURES,)),)

    def setup(self) -> None:
        models = load_models()
        self._scaler, self._pca = models["scaler"], models["pca"]

    def predict(self, inputs: list[Any]) -> list[Any]:
        rows = np.stack([tensors["measurements"].to_numpy() for tensors in inputs])
        scaled = self._scaler.transform(rows)
        projected = self._pca.transform(scaled)
        return [{"x": s, "z": z} for s, z in zip(scaled, projected, strict=True)]


class RiskTrees(_SklearnStage):
    """Gradient-boosted trees on the PCA projection: probability of malignancy."""

    def setup(self) -> None:
        self._trees = load_models()["trees"]
        self._malignant = list(self._trees.classes_).index(1)

    def predict(self, inputs: list[Any]) -> list[Any]:
        proba = self._trees.predict_proba(np.stack([x["z"] for x in inputs]))[:, self._malignant]
        return [{"x": x["x"], "risk": float(p)} for x, p in zip(inputs, proba, strict=True)]

    def route(self, output: Any) -> Iterable[str]:
        return ("mc_mlp", "combine") if is_unsure(output["risk"]) else ("combine",)


class McDropoutMlp(StageModel):
    """A second opinion for unsure rows: MC_PASSES dropout passes of a 3x512 MLP."""

    @classmethod
    def preload(cls) -> None:
        import torch  # noqa: F401  (replicas fork from a template that imported it)

        preload_models()

    def setup(self) -> None:
        import torch

        torch.set_num_threads(_threads(self.threads))
        torch.manual_seed(os.getpid())  # replicas draw different dropout masks
        self._net = build_mlp(load_models()["mlp"])
        mc_dropout(self._net, np.zeros((2, N_FEATURES)), MC_PASSES)  # warm up

    def predict(self, inputs: list[Any]) -> list[Any]:
        mean, spread = mc_dropout(self._net, np.stack([x["x"] for x in inputs]), MC_PASSES)
        return [{"risk": float(m), "spread": float(s)} for m, s in zip(mean, spread, strict=True)]


class Explain(_SklearnStage):
    """A logistic regression on the standardised row; its largest per-feature
    contributions to the log-odds of malignancy, as names and values."""

    def setup(self) -> None:
        linear = load_models()["linear"]
        sign = 1.0 if list(linear.classes_).index(1) == 1 else -1.0
        self._coef = sign * linear.coef_[0]
        self._names = np.array(data_split().feature_names)

    def predict(self, inputs: list[Any]) -> list[Any]:
        contributions = np.stack([x["x"] for x in inputs]) * self._coef
        top = np.argsort(-np.abs(contributions), axis=1, kind="stable")[:, :TOP_FEATURES]
        return [
            {"features": self._names[t].tolist(), "contributions": c[t].round(4).tolist()}
            for c, t in zip(contributions, top, strict=True)
        ]


_OUTPUTS = (
    TensorSpec("risk", "FP64", (1,)),
    TensorSpec("uncertainty", "FP64", (1,)),
    TensorSpec("triage", "BYTES", (1,)),
    TensorSpec("model", "BYTES", (1,)),
    TensorSpec("top_features", "BYTES", (TOP_FEATURES,)),
    TensorSpec("contributions", "FP64", (TOP_FEATURES,)),
)


class Combine(StageModel):
    """The join: the MLP's risk when it ran, else the trees'; the triage decision and
    the explanation."""

    outputs: ClassVar[tuple[TensorSpec, ...]] = _OUTPUTS

    def predict(self, inputs: list[Any]) -> list[Any]:
        return [self._one(parts) for parts in inputs]

    @staticmethod
    def _one(parts: dict[str, Any]) -> dict[str, Any]:
        second = parts.get("mc_mlp")
        risk = second["risk"] if second else parts["risk"]["risk"]
        spread = second["spread"] if second else 0.0
        return {
            "risk": round(risk, 6),
            "uncertainty": round(spread, 6),
            "triage": triage(risk, spread, second is not None),
            "model": "trees+mc_mlp" if second else "trees",
            "top_features": parts["explain"]["features"],
            "contributions": parts["explain"]["contributions"],
        }


# --- python tabular_triage.py: the numbers in README.md --------------------------------------


def _median_ms(run: Callable[[], object], reps: int = 60) -> float:
    run()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return float(np.median(times)) * 1e3


def _report() -> Iterator[str]:
    import torch

    torch.set_num_threads(1)
    split = data_split()
    models = load_models()
    x_test = models["scaler"].transform(split.x_test)
    malignant = list(models["trees"].classes_).index(1)
    risk = models["trees"].predict_proba(models["pca"].transform(x_test))[:, malignant]
    net = build_mlp(models["mlp"])
    torch.manual_seed(0)
    mlp_risk, spread = mc_dropout(net, x_test, MC_PASSES)
    linear = models["linear"].predict(x_test)
    unsure = np.array([is_unsure(float(r)) for r in risk])
    final = np.where(unsure, mlp_risk, risk)
    y = split.y_test
    n = len(y)
    yield f"models trained in {models['train_s']} s (cache: {models_path()})"
    yield f"test rows: {n} ({int(y.sum())} malignant)"
    yield f"trees alone accuracy: {np.mean((risk >= 0.5) == y):.4f}"
    yield f"MC-dropout MLP alone accuracy: {np.mean((mlp_risk >= 0.5) == y):.4f}"
    yield f"linear (explain) accuracy: {np.mean(linear == y):.4f}"
    yield f"unsure -> mc_mlp: {unsure.mean():.3f} ({int(unsure.sum())} / {n})"
    sure_right = ((risk >= 0.5) == y)[~unsure]
    yield f"trees accuracy on the rows they are sure of: {np.mean(sure_right):.4f}"
    yield f"pipeline accuracy: {np.mean((final >= 0.5) == y):.4f}"
    decisions = [
        triage(float(r), float(s), bool(u)) for r, s, u in zip(final, spread, unsure, strict=True)
    ]
    yield "triage: " + ", ".join(
        f"{d} {decisions.count(d)}" for d in ("refer", "review", "routine")
    )
    scaler, pca, trees = models["scaler"], models["pca"], models["trees"]
    for size in (1, 8):
        rows = split.x_test[:size]
        x, z = scaler.transform(rows), pca.transform(scaler.transform(rows))
        times = {
            "features": _median_ms(lambda r=rows: pca.transform(scaler.transform(r))),
            "trees": _median_ms(lambda z=z: trees.predict_proba(z)),
            "mc_mlp": _median_ms(lambda x=x: mc_dropout(net, x, MC_PASSES)),
        }
        yield f"batch {size}: " + ", ".join(f"{k} {v:.2f} ms" for k, v in times.items())


if __name__ == "__main__":
    for line in _report():
        print(line)
