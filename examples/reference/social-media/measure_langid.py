#!/usr/bin/env python
"""Measure a real language-identification stage on one CPU thread (``langid``).

The InferLine paper's Social Media pipeline starts with a language
identification stage that decides whether a post's text must go to the
German or the Spanish NMT model. No published latency-vs-batch curve exists
for such a stage, so this script measures a real one here: ``langid.py``
(Lui & Baldwin, 2012; ``pip install langid``), its default pre-trained model
over 97 languages, called as ``langid.classify(text)`` once per post.

Input: short social-media-like posts generated from hand-written sentence
banks in English, Spanish and German (``SENTENCES`` below). Each post is one
or two sentences of one language, sometimes with a hashtag or an @mention,
the language drawn with the mix ``--mix`` (default en 0.7, es 0.2, de 0.1,
the same mix whose branch probabilities pipeline.yaml uses). ``langid`` has no
batch API, so a batch of b posts is ``[langid.classify(t) for t in batch]``:
the stage gains nothing from batching, as the measurement shows.

Each batch size (1, 2, 4, ..., 32) is warmed up, then timed ``--reps`` times;
every repetition classifies a different batch of posts (drawn beforehand
from a pool, so drawing is not timed). Each repetition records both the wall
time (``time.perf_counter``) and this thread's CPU time (``time.thread_time``);
the table prints the median and 99th percentile of both, in seconds per batch.
The YAML block reports the wall time by default; ``--clock cpu`` reports the
CPU time instead, which leaves out the time a shared machine spent running
other processes (the service time a dedicated vCPU would give). Threading is
pinned to one thread (OMP/OpenBLAS/MKL variables set before numpy is
imported) because the stage is priced per vCPU (``c5-1vcpu``).

It also prints how often langid labels the generated posts de / es / en
(and its accuracy against the language each post was generated in), which
is where the branch probabilities in pipeline.yaml come from.

Usage::

    python measure_langid.py                        # print table + YAML block
    python measure_langid.py --update profiles.yaml # also rewrite the block in the file
    python measure_langid.py --clock cpu --update profiles.yaml   # CPU time in the block

``--update`` replaces the text between the lines ``# BEGIN measured langid``
and ``# END measured langid`` in the given file.
"""

from __future__ import annotations

import os

# Single thread: must be set before numpy (and langid, which imports numpy) is imported.
for _var in (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import datetime as _dt  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

try:
    import langid
except ImportError:  # pragma: no cover - a message, not a traceback
    sys.exit("this script needs langid: pip install langid")

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
CLOCK_TEXT = {
    "wall": "wall time (time.perf_counter)",
    "cpu": "thread CPU time (time.thread_time; excludes time the shared VM ran other "
    "processes, i.e. the service time of a dedicated vCPU)",
}
BEGIN = "# BEGIN measured langid"
END = "# END measured langid"

# Hand-written sentence banks, in the register of short public posts.
SENTENCES: dict[str, tuple[str, ...]] = {
    "en": (
        "Just got back from the beach and I am already missing the sunshine.",
        "Can anyone recommend a good pizza place near downtown?",
        "The new season of that show is even better than the first one.",
        "Traffic on the highway this morning was absolutely terrible.",
        "Happy birthday to my little sister, love you so much!",
        "I can't believe how fast this year is going by.",
        "Our team finally won the match after three weeks of losses.",
        "Does anybody know why the train is delayed again today?",
        "Made homemade pasta for the first time and it turned out great.",
        "Coffee first, then we can talk about work.",
        "Thank you all for the kind messages, it means a lot.",
        "The concert last night was the best one I have ever been to.",
        "Looking for a roommate starting next month, send me a message.",
        "My dog learned a new trick and I am so proud of him.",
        "It is raining again and I forgot my umbrella at home.",
        "Reading a great book about the history of the internet.",
        "Who else is watching the game tonight?",
        "The new update completely broke the app on my phone.",
        "We planted tomatoes in the garden this weekend.",
        "Finished my first marathon today, my legs hate me right now.",
        "This little cafe has the best croissants in the city.",
        "Please share this post, our cat has been missing since Tuesday.",
        "Working from home has its pros and cons.",
        "Can't wait for the holidays to start next week.",
        "That was the funniest movie I have seen in years.",
        "Hiking trip with friends, the view from the top was amazing.",
        "Why is it so hard to find a parking spot on Saturdays?",
        "Learning to play the guitar one chord at a time.",
        "Breaking news: the city council approved the new bike lanes.",
        "Good morning everyone, have a wonderful day!",
    ),
    "es": (
        "Acabo de volver de la playa y ya echo de menos el sol.",
        "¿Alguien me recomienda una buena pizzería en el centro?",
        "La nueva temporada de la serie es todavía mejor que la primera.",
        "El tráfico en la autopista esta mañana fue horrible.",
        "Feliz cumpleaños a mi hermana pequeña, ¡te quiero mucho!",
        "No puedo creer lo rápido que está pasando este año.",
        "Nuestro equipo por fin ganó el partido después de tres semanas sin ganar.",
        "¿Alguien sabe por qué el tren vuelve a llegar tarde hoy?",
        "Hice pasta casera por primera vez y me salió muy bien.",
        "Primero un café, después hablamos de trabajo.",
        "Gracias a todos por los mensajes tan bonitos, significa mucho para mí.",
        "El concierto de anoche fue el mejor al que he ido nunca.",
        "Busco compañero de piso a partir del mes que viene, escríbeme.",
        "Mi perro aprendió un truco nuevo y estoy muy orgulloso de él.",
        "Está lloviendo otra vez y olvidé el paraguas en casa.",
        "Estoy leyendo un libro muy bueno sobre la historia de internet.",
        "¿Quién más va a ver el partido esta noche?",
        "La nueva actualización rompió por completo la aplicación de mi móvil.",
        "Este fin de semana plantamos tomates en el jardín.",
        "Hoy terminé mi primer maratón, me duelen muchísimo las piernas.",
        "Esta cafetería tiene los mejores cruasanes de la ciudad.",
        "Por favor compartid, nuestro gato lleva desaparecido desde el martes.",
        "Trabajar desde casa tiene sus ventajas y sus inconvenientes.",
        "Tengo muchas ganas de que empiecen las vacaciones la semana que viene.",
        "Es la película más divertida que he visto en años.",
        "Excursión con amigos, las vistas desde la cima eran increíbles.",
        "¿Por qué es tan difícil aparcar los sábados?",
        "Aprendiendo a tocar la guitarra acorde a acorde.",
        "Última hora: el ayuntamiento aprobó los nuevos carriles bici.",
        "¡Buenos días a todos, que tengáis un día estupendo!",
    ),
    "de": (
        "Bin gerade vom Strand zurück und vermisse die Sonne schon jetzt.",
        "Kann jemand eine gute Pizzeria in der Innenstadt empfehlen?",
        "Die neue Staffel der Serie ist sogar besser als die erste.",
        "Der Verkehr auf der Autobahn war heute Morgen eine Katastrophe.",
        "Alles Gute zum Geburtstag, kleine Schwester, ich hab dich lieb!",
        "Ich kann nicht glauben, wie schnell dieses Jahr vergeht.",
        "Unsere Mannschaft hat nach drei Wochen endlich wieder gewonnen.",
        "Weiß jemand, warum der Zug heute schon wieder Verspätung hat?",
        "Zum ersten Mal selbst Nudeln gemacht und sie sind super geworden.",
        "Erst einen Kaffee, dann reden wir über die Arbeit.",
        "Danke euch allen für die lieben Nachrichten, das bedeutet mir viel.",
        "Das Konzert gestern Abend war das beste, auf dem ich je war.",
        "Suche ab nächstem Monat einen Mitbewohner, schreibt mir einfach.",
        "Mein Hund hat einen neuen Trick gelernt und ich bin so stolz.",
        "Es regnet schon wieder und ich habe meinen Schirm zu Hause vergessen.",
        "Ich lese gerade ein tolles Buch über die Geschichte des Internets.",
        "Wer schaut heute Abend noch das Spiel?",
        "Das neue Update hat die App auf meinem Handy komplett kaputt gemacht.",
        "Am Wochenende haben wir Tomaten im Garten gepflanzt.",
        "Heute meinen ersten Marathon geschafft, meine Beine hassen mich.",
        "Dieses kleine Café hat die besten Croissants der Stadt.",
        "Bitte teilen, unsere Katze wird seit Dienstag vermisst.",
        "Arbeiten von zu Hause hat Vor- und Nachteile.",
        "Ich freue mich schon so auf den Urlaub nächste Woche.",
        "Das war der lustigste Film, den ich seit Jahren gesehen habe.",
        "Wanderung mit Freunden, die Aussicht vom Gipfel war unglaublich.",
        "Warum ist es samstags so schwer, einen Parkplatz zu finden?",
        "Ich lerne Gitarre spielen, einen Akkord nach dem anderen.",
        "Eilmeldung: Der Stadtrat hat die neuen Radwege beschlossen.",
        "Guten Morgen zusammen, habt einen schönen Tag!",
    ),
}
TAGS = ("#weekend", "#news", "#food", "#travel", "#music", "#sport", "@friend", "#tbt")


def make_posts(n: int, mix: dict[str, float], rng: np.random.Generator) -> list[tuple[str, str]]:
    """``n`` posts as (true language, text): 1-2 sentences, sometimes a hashtag."""
    langs = list(mix)
    weights = np.array([mix[k] for k in langs], dtype=float)
    weights /= weights.sum()
    posts = []
    for lang in rng.choice(langs, size=n, p=weights):
        bank = SENTENCES[str(lang)]
        k = 1 if rng.random() < 0.6 else 2
        parts = [bank[i] for i in rng.choice(len(bank), size=k, replace=False)]
        if rng.random() < 0.3:
            parts.append(str(rng.choice(TAGS)))
        posts.append((str(lang), " ".join(parts)))
    return posts


def classify_batch(texts: list[str]) -> list[str]:
    """The stage: one ``langid.classify`` call per post; returns the language codes."""
    return [langid.classify(t)[0] for t in texts]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description() -> str:
    today = _dt.date.today().isoformat()
    return (
        f"{_cpu_model()} ({platform.machine()}), os.cpu_count()={os.cpu_count()}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"langid {metadata.version('langid')}, numpy {np.__version__}, 1 thread; "
        f"measured {today} by measure_langid.py"
    )


def label_stats(posts: list[tuple[str, str]]) -> tuple[Counter[str], float]:
    """Label counts langid gives the posts, and its accuracy against the generated language."""
    labels = classify_batch([t for _, t in posts])
    correct = sum(lab == lang for lab, (lang, _) in zip(labels, posts, strict=True))
    return Counter(labels), correct / len(posts)


def measure(
    batch_sizes: tuple[int, ...], reps: int, warmup: int, pool: list[str], seed: int
) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Return (batch, wall times, thread CPU times) per batch size, seconds per batch."""
    rng = np.random.default_rng(seed)
    classify_batch(pool[:1])  # loads the model (a one-off ~1 s), never timed
    results = []
    for b in batch_sizes:
        batches = [
            [pool[i] for i in rng.integers(0, len(pool), size=b)] for _ in range(warmup + reps)
        ]
        for batch in batches[:warmup]:
            classify_batch(batch)
        wall = np.empty(reps)
        cpu = np.empty(reps)
        for k, batch in enumerate(batches[warmup:]):
            c0 = time.thread_time()
            t0 = time.perf_counter()
            classify_batch(batch)
            wall[k] = time.perf_counter() - t0
            cpu[k] = time.thread_time() - c0
        results.append((b, wall, cpu))
    return results


def yaml_block(
    results: list[tuple[int, np.ndarray, np.ndarray]],
    clock: str,
    reps: int,
    mix: dict[str, float],
    chars: float,
) -> str:
    mix_txt = "/".join(f"{k} {v:g}" for k, v in mix.items())
    what = CLOCK_TEXT[clock]
    lines = [
        BEGIN,
        "  - stage: langid",
        "    hardware: c5-1vcpu",
        '    source: "measured here by measure_langid.py (langid.py default 97-language model, '
        "one langid.classify call per post; generated short posts (1-2 sentences, mean "
        f"{chars:.0f} characters), language mix {mix_txt}; {reps} timed reps per batch after "
        f'warm-up, a different batch every rep; median and p99 of the per-batch {what})"',
        f'    measured_on: "{machine_description()}"',
        "    points:",
    ]
    for b, wall, cpu in results:
        times = wall if clock == "wall" else cpu
        med, p99 = float(np.median(times)), float(np.percentile(times, 99))
        lines.append(
            f"      - {{batch_size: {b}, median_s: {med:.6f}, p99_s: {p99:.6f}}}"
            f"   # {b / med:.0f} posts/s at the median"
        )
    lines.append(END)
    return "\n".join(lines) + "\n"


def update_file(path: Path, block: str) -> None:
    text = path.read_text(encoding="utf-8")
    start = text.find(BEGIN)
    stop = text.find(END)
    if start < 0 or stop < start:
        sys.exit(f"{path}: markers '{BEGIN}' / '{END}' not found; paste the block by hand")
    stop = text.index("\n", stop) + 1
    path.write_text(text[:start] + block + text[stop:], encoding="utf-8")


def _parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        lang, _, weight = part.partition("=")
        if lang.strip() not in SENTENCES:
            raise argparse.ArgumentTypeError(f"unknown language {lang!r}; use en, es, de")
        mix[lang.strip()] = float(weight)
    return mix


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="timed repetitions per batch (>= 30)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed batches per batch size")
    parser.add_argument(
        "--mix", type=_parse_mix, default="en=0.7,es=0.2,de=0.1", help="language mix of the posts"
    )
    parser.add_argument("--pool", type=int, default=5000, help="generated posts to draw from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="what the YAML block reports: wall time (default) or this thread's CPU time",
    )
    parser.add_argument("--update", type=Path, help="profiles.yaml whose marked block to rewrite")
    args = parser.parse_args(argv)
    if args.reps < 30:
        parser.error("--reps must be at least 30")

    rng = np.random.default_rng(args.seed)
    posts = make_posts(args.pool, args.mix, rng)
    pool = [t for _, t in posts]
    chars = float(np.mean([len(t) for t in pool]))
    counts, accuracy = label_stats(posts)
    print(f"# {machine_description()}")
    print(f"# {len(posts)} posts, mean {chars:.1f} characters; generated mix {args.mix}")
    shares = ", ".join(f"{k} {v / len(posts):.3f}" for k, v in counts.most_common(6))
    print(f"# langid labels: {shares}; accuracy vs generated language {accuracy:.4f}")

    results = measure(BATCH_SIZES, args.reps, args.warmup, pool, args.seed + 1)
    print(
        f"# {'batch':>5} {'wall med':>10} {'wall p99':>10} {'wall mean':>10} "
        f"{'cpu med':>10} {'cpu p99':>10}   (seconds per batch)"
    )
    for b, wall, cpu in results:
        print(
            f"# {b:>5} {np.median(wall):>10.6f} {np.percentile(wall, 99):>10.6f} "
            f"{wall.mean():>10.6f} {np.median(cpu):>10.6f} {np.percentile(cpu, 99):>10.6f}"
        )
    block = yaml_block(results, args.clock, args.reps, args.mix, chars)
    print(block, end="")
    if args.update is not None:
        update_file(args.update, block)
        print(f"# wrote the block into {args.update}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
