"""Protocol of the NITK report: per-class DCGAN augmentation, then ImageNet transfer.

For each fold (a speaker-independent split, or the report's random split):

1. Images. Every utterance becomes one 224 x 224 log-mel spectrogram image, computed by
   the served front end (`ImageBank`, feature preset ``nitk``).
2. GANs (`fold_gans`). For each class chosen for augmentation (the minority classes),
   a DCGAN (`keras_ser.models.nitk_gan`) is trained on that class's training images
   only, D1 first and D2 after the switch (`keras_ser.training.bce_gan`), and generates
   the images the augmentation policy asks for (`augmentation_counts`). They are shared
   by the three augmented classifiers of the fold.
3. Classifiers (`train_classifier`). Each transfer network
   (`keras_ser.models.transfer`) is trained on the real training images, or on them plus
   the generated ones. Its frozen part is computed once per image (`FeatureCache`) and
   only the trainable part is trained, unless ``cache=False``.
4. Scores. Accuracy on the training images (the report's "Training" row), on the
   validation speakers, and on the test speakers with WA, UA, macro-F1 and per-class
   recall, all from the exported classifier's own front end (`keras_ser.scoring`).

A recipe checks its options once, before any image is computed, into a `Plan`, which
then runs steps 2 and 3 for each (row, fold): `Plan.gan_images`, `Plan.train`.

The two protocols differ only in the split (`Split`): speaker-independent folds keep
the epoch with the best validation-speaker accuracy and test on unseen speakers; the
report's random split (80 / 20 of the utterances, stratified; the ratio is our choice,
the report gives none) mixes speakers, has no separate validation set, trains for
the whole budget and reports the held-out 20 % as the report's "Validation" accuracy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from keras_ser import data, io, metrics, plots, seeds
from keras_ser.models import nitk_gan, transfer
from keras_ser.scoring import Scorer
from keras_ser.serving.builders import FrontEnd, build_units_model
from keras_ser.training import bce_gan
from keras_ser.training.resumable import (
    LambdaLogs,
    PersistentEarlyStopping,
    fit_resumable,
)

FEATURES = "nitk"
AUGMENTED = "+gan"
ROWS = tuple(transfer.CLASSIFIERS) + tuple(c + AUGMENTED for c in transfer.CLASSIFIERS)
TITLES = {**{c: s.title for c, s in transfer.CLASSIFIERS.items()},
          **{c + AUGMENTED: s.title + " + GAN" for c, s in transfer.CLASSIFIERS.items()}}
#: Fraction of the utterances held out by the report's random split (our choice).
RANDOM_SPLIT_FRACTION = 0.2
#: `FeatureCache` outputs above this many bytes are memory-mapped in its directory.
MEMMAP_BYTES = 1 << 30
#: Largest absolute GAN loss before training stops with `DivergenceError` (our choice;
#: the clipped BCE losses stay below ~33, so in practice this catches NaN and inf).
GAN_DIVERGENCE_LIMIT = 1e6
#: Fewest training images of a class that can train its GAN.
MIN_GAN_IMAGES = 2


def front_end() -> FrontEnd:
    """The served front end: one 224 x 224 x 3 [0, 255] image per utterance."""
    return FrontEnd(features=FEATURES, statistics={})


@dataclasses.dataclass(frozen=True)
class GANSchedule:
    """Budget of one class's GAN.

    Attributes:
        steps: Generator (and discriminator) updates in all (not in the report).
        steps_per_epoch: Updates between two logged epochs, grids and checkpoints.
        batch_size: Real images per step (report 128; the class's size when smaller).
        switch_ratio: `keras_ser.training.bce_gan.GeneratorLossDropped` ratio.
        max_d1_fraction: Share of ``steps`` D1 may use at most (our choice, 0.5).
        d_lr, g_lr: Adam learning rates (report: 2e-5..5e-5 and 1.7e-4..2e-4).
    """

    steps: int = 2000
    steps_per_epoch: int = 50
    batch_size: int = 128
    switch_ratio: float = 0.7
    max_d1_fraction: float = 0.5
    d_lr: float = 2e-5
    g_lr: float = 2e-4

    def __post_init__(self):
        if self.steps < 2 * self.steps_per_epoch or self.steps_per_epoch < 1:
            raise ValueError(f"need steps >= 2 x steps_per_epoch >= 2 (one epoch per "
                             f"discriminator), got {self.steps} and {self.steps_per_epoch}")

    @property
    def epochs(self) -> int:
        """Logged epochs in all."""
        return self.steps // self.steps_per_epoch

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Split:
    """Which utterances train, validate and test in one fold.

    Attributes:
        name: Fold name.
        train, validation, test: Utterance indices; ``validation`` is empty for the
            random split (then the last epoch is kept).
        protocol: ``"speaker"`` (speaker-independent) or ``"random"``.
        speakers: ``{"train", "validation", "test"}`` speaker lists (for the record).
    """

    name: str
    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    protocol: str
    speakers: dict

    def indices(self) -> tuple:
        """``(train, validation, test)`` utterance indices (the baseline's split)."""
        return self.train, self.validation, self.test

    @classmethod
    def from_fold(cls, fold, utterances: data.Utterances) -> Split:
        """The utterances of a `keras_ser.folds.Fold`'s speakers.

        Raises:
            ValueError: A part without utterances.
        """
        parts = {p: utterances.indices(fold.part(p)) for p in ("train", "validation", "test")}
        for part, index in parts.items():
            if not len(index):
                raise ValueError(f"fold {fold.name}: no {part} utterances for speakers "
                                 f"{sorted(fold.part(part))}")
        return cls(fold.name, parts["train"], parts["validation"], parts["test"], "speaker",
                   {p: sorted(fold.part(p)) for p in parts})

    @classmethod
    def random(cls, utterances: data.Utterances, seed: int, name: str = "random-split",
               fraction: float = RANDOM_SPLIT_FRACTION) -> Split:
        """The report's random split: ``fraction`` of the utterances held out,
        stratified by class (scikit-learn's ``train_test_split``), speakers mixed."""
        from sklearn.model_selection import train_test_split

        index = np.arange(len(utterances))
        train, test = train_test_split(index, test_size=fraction, random_state=seed % 2 ** 32,
                                       stratify=utterances.labels)
        return cls(name, np.sort(train), np.zeros(0, np.int64), np.sort(test), "random",
                   {"train": sorted(set(utterances.speakers)), "validation": [],
                    "test": sorted(set(utterances.speakers))})


class ImageBank:
    """Every utterance's spectrogram image, computed once by the served front end.

    Args:
        utterances: `keras_ser.data.Utterances`.
        front: The image front end (default `front_end`).

    Attributes:
        images: ``(n, 224, 224, 1)`` float32 in [0, 255] (the three channels of the
            served image are equal; one is kept).

    Raises:
        tf.errors.InvalidArgumentError: An utterance shorter than one STFT window.
    """

    def __init__(self, utterances: data.Utterances, front: FrontEnd | None = None):
        units = build_units_model(front or front_end())
        cut = tf.function(lambda w: units(w, training=False),
                          input_signature=[tf.TensorSpec([1, None], tf.float32)])
        self.images = np.stack([cut(tf.constant(w.astype(np.float32)[None] / 32768.0))
                                .numpy()[0, ..., :1] for w in utterances.waveforms])

    def rgb(self, index) -> np.ndarray:
        """The three-channel images the transfer networks take.

        Args:
            index: Utterance indices (anything numpy indexing takes; k images).

        Returns:
            ``(k, 224, 224, 3)`` float32 in [0, 255], a new array: the grey image
            repeated in three equal channels (as the served front end makes them).
        """
        return np.repeat(self.images[index], 3, axis=-1)


class FeatureCache:
    """The frozen part of a transfer network computed once per image, kept on disk.

    An entry is keyed by the SHA-1 of the frozen part's configuration and weights
    (`keras_ser.models.transfer.TransferNetwork.frozen_digest`) and of the image's
    bytes, so any change of network, weights, input size or image makes a new entry;
    entries are ``<directory>/<network>-<digest>/<image sha1>.npy``, written atomically.

    Only the disk holds entries when ``directory`` is given, so memory stays at one
    fold's features (``vgg16_half`` at 224 x 224 caches 1.6 MB per image: 28 x 28 x 512
    float32).

    Images are grey: one channel, or three equal channels (`ImageBank.rgb`); an entry
    is keyed by, and computed from, the first channel.

    Args:
        directory: Cache folder (created); ``None`` keeps entries in memory only.
        memmap_bytes: `features` outputs larger than this are memory-mapped files in
            ``directory`` instead of memory (default `MEMMAP_BYTES`, 1 GiB; ignored
            without a directory).

    Attributes:
        hits, misses: Images served from the cache and computed, since creation.
    """

    def __init__(self, directory: str | None, memmap_bytes: int | None = None):
        self.directory = directory
        self.memmap_bytes = MEMMAP_BYTES if memmap_bytes is None else int(memmap_bytes)
        self.memory: dict = {}
        self.hits = self.misses = 0

    def features(self, network: transfer.TransferNetwork, images: np.ndarray,
                 batch_size: int = 32) -> np.ndarray:
        """``network.frozen`` on every image, from the cache where possible.

        Memory: the output is allocated once and filled entry by entry (no list of
        per-image arrays, no stacked copy), besides one batch of misses in RGB. With a
        ``directory`` and an output above ``memmap_bytes`` it is a `numpy.memmap` of a
        temporary ``.npy`` file in ``directory``, unlinked at once (POSIX): the space is
        freed when the array and every view of it are garbage collected (elsewhere,
        where an open file cannot be unlinked, the file is removed at that point).

        Args:
            network: A `TransferNetwork`.
            images: ``(n, H, W, 1)`` or ``(n, H, W, 3)`` float32 in [0, 255]; three
                channels must be equal (grey images).
            batch_size: Images per forward pass of the misses.

        Returns:
            ``(n, *network.frozen.output_shape[1:])`` float32 (an `numpy.ndarray`, or a
            `numpy.memmap` as above).

        Raises:
            ValueError: Not 4-D with 1 or 3 channels, or three unequal channels.
        """
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"FeatureCache.features: images must be (n, H, W, 1) or "
                             f"(n, H, W, 3), got shape {images.shape}")
        folder = f"{network.name}-{network.frozen_digest()[:16]}"
        out = self._allocate((len(images), *network.frozen.output_shape[1:]))
        keys, missing = [], []
        for i, im in enumerate(images):
            if im.shape[-1] == 3 and not (np.array_equal(im[..., 0], im[..., 1])
                                          and np.array_equal(im[..., 0], im[..., 2])):
                raise ValueError(f"FeatureCache.features: image {i} has unequal channels; "
                                 f"the cache takes grey images (one channel, or three "
                                 f"equal ones) and computes from the first channel")
            keys.append(hashlib.sha1(np.ascontiguousarray(im[..., :1]).tobytes())
                        .hexdigest())
            found = self._load(folder, keys[-1])
            if found is None:
                missing.append(i)
            else:
                out[i] = found
        self.hits += len(images) - len(missing)
        self.misses += len(missing)
        forward = _inference(network.frozen)
        for start in range(0, len(missing), batch_size):
            chosen = missing[start:start + batch_size]
            rgb = np.repeat(images[chosen, ..., :1], 3, axis=-1)
            for i, value in zip(chosen, np.asarray(forward(rgb))):
                out[i] = value
                self._store(folder, keys[i], value)
        return out

    def _allocate(self, shape: tuple) -> np.ndarray:
        """An uninitialised float32 array of ``shape``: memory-mapped when big (above)."""
        if self.directory is None or math.prod(shape) * 4 <= self.memmap_bytes:
            return np.empty(shape, np.float32)
        os.makedirs(self.directory, exist_ok=True)
        handle, path = tempfile.mkstemp(prefix=".features-", suffix=".npy",
                                        dir=self.directory)
        os.close(handle)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        try:
            os.remove(path)  # the mapping keeps the data until it is collected
        except OSError:
            weakref.finalize(out, _remove_quietly, path)
        return out

    def _load(self, folder, key):
        if self.directory is None:
            return self.memory.get((folder, key))
        path = os.path.join(self.directory, folder, key + ".npy")
        return np.load(path) if os.path.isfile(path) else None

    def _store(self, folder, key, value):
        if self.directory is None:
            self.memory[folder, key] = value
        else:
            path = os.path.join(self.directory, folder, key + ".npy")
            io.atomic_write(path, lambda tmp: np.save(tmp, value), suffix=".npy")


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def random_folds(speakers, splits: int) -> list:
    """``splits`` folds standing for the report's random splits (`Split.random` draws
    each one's utterances from its name), named ``random-split-<k>``.

    Args:
        speakers: Every utterance's speaker (each fold lists them all as training
            speakers, for the record; the split itself mixes them).
        splits: Number of independent random splits (the report: 1).

    Returns:
        ``splits`` `keras_ser.folds.Fold` objects ``random-split-1 .. -<splits>`` with
        no validation and no test speakers (`fold_split` recognises them by that).
    """
    from keras_ser.folds import Fold

    return [Fold(f"random-split-{i + 1}", sorted(set(speakers)), [], [])
            for i in range(splits)]


def fold_split(fold, utterances: data.Utterances, seed: int) -> Split:
    """The `Split` of a fold: a random split for `random_folds`' folds (seeded from
    ``(seed, fold name)``), else its speakers' utterances.

    Args:
        fold: A `keras_ser.folds.Fold` (speaker-independent, or from `random_folds`).
        utterances: The corpus (its ``labels`` and ``speakers``).
        seed: Run seed (the random split's draw derives from it and the fold's name).

    Returns:
        A `Split` (``protocol`` ``"random"`` or ``"speaker"``).

    Raises:
        ValueError: A speaker fold with a part without utterances (`Split.from_fold`).
    """
    if fold.name.startswith("random-split-") and not fold.test:
        return Split.random(utterances, seeds.derive(seed, fold.name), fold.name)
    return Split.from_fold(fold, utterances)


def parse_policy(text: str):
    """An ``--augment-count`` text (``balance``, ``N`` or ``class=N,...``) as
    `augmentation_counts` takes it.

    Raises:
        ValueError: Another text.
    """
    if text == "balance":
        return text
    try:
        if "=" in text:
            return {k.strip(): int(v) for k, v in (p.split("=") for p in text.split(","))}
        return int(text)
    except ValueError:
        raise ValueError(f"--augment-count {text!r}: use balance, N or class=N,...") from None


def recall_markdown(results: Sequence[dict], classes: Sequence[str]) -> str:
    """Markdown: test recall of each augmented class (the GANs of a ``+gan`` result),
    original vs augmented row, mean over the folds (and runs) both rows have.

    Args:
        results: Fold results of every row (`train_classifier` dicts with ``repeat``;
            a ``+gan`` result's ``gans`` names its augmented classes).
        classes: Class names.

    Returns:
        A Markdown section: title and a table of classifier, class, recall of the
        original and of the augmented row in % (mean over the (fold, run) pairs both
        rows have) and the number of pairs; classes never augmented have no line.
    """
    lines = ["## Recall of the augmented classes (test, mean over folds)", "",
             "| Classifier | Class | Original | Augmented | Folds |", "|---|---|---|---|---|"]
    for name, spec in transfer.CLASSIFIERS.items():
        original = {(r["fold"], r["repeat"]): r for r in results if r["row"] == name}
        for c in classes:
            pairs = [(original[s["fold"], s["repeat"]]["test"]["recall"].get(c),
                      s["test"]["recall"].get(c)) for s in results
                     if s["row"] == name + AUGMENTED and c in s.get("gans", {})
                     and (s["fold"], s["repeat"]) in original]
            pairs = [p for p in pairs if None not in p]
            if pairs:
                before, after = (100 * np.mean(v) for v in zip(*pairs))
                lines.append(f"| {spec.title} | {c} | {before:.1f} | {after:.1f} | "
                             f"{len(pairs)} |")
    return "\n".join(lines)


def augmentation_sections(results: Sequence[dict], names: Sequence[str],
                          classes: Sequence[str], columns: Sequence, paired: bool) -> tuple:
    """Each augmented row against its original row, over folds.

    Args:
        results: Fold results of every row.
        names: The classifiers (rows ``name`` and ``name + AUGMENTED``).
        classes: Class names.
        columns: `keras_ser.experiment.Metric` columns; tests for those among WA and UA.
        paired: Write the paired-test sections (False with a single fold).

    Returns:
        ``(tests, sections)``: ``{"wa" | "ua": {row: paired test}}``
        (`keras_ser.experiment.paired_tests`, Wilcoxon over folds) and the Markdown
        sections (the paired tests, then `recall_markdown`).
    """
    from keras_ser import experiment

    tests = {key: {k: v for n in names for k, v in experiment.paired_tests(
        results, [n, n + AUGMENTED], n, key).items()} for key in ("wa", "ua")}
    sections = [experiment.paired_tests_markdown(tests[m.key], "the original row", m, TITLES)
                for m in columns if m.key in tests and paired]
    return tests, sections + [recall_markdown(results, classes)]


def minority_classes(labels, classes: Sequence[str], count: int) -> list:
    """The ``count`` classes with the fewest examples in ``labels`` (ties: class order).

    Raises:
        ValueError: ``count`` not in ``1 .. len(classes) - 1``.
    """
    if not 0 < count < len(classes):
        raise ValueError(f"can augment 1..{len(classes) - 1} of {len(classes)} classes, "
                         f"asked for {count}")
    sizes = np.bincount(np.asarray(labels), minlength=len(classes))
    order = sorted(range(len(classes)), key=lambda k: (sizes[k], k))
    return [classes[k] for k in order[:count]]


def gan_classes(labels, classes: Sequence[str], chosen: Sequence[str]) -> tuple:
    """Split the classes chosen for augmentation by whether their GAN can train.

    Args:
        labels: ``(n,)`` training labels (class indices) of the fold.
        classes: Class names.
        chosen: Classes chosen for augmentation (names in ``classes``).

    Returns:
        ``(kept, skipped)``: the chosen classes with at least `MIN_GAN_IMAGES` training
        images, and the others (they cannot train a GAN; our rule: not augmented).
    """
    sizes = np.bincount(np.asarray(labels, np.int64), minlength=len(classes))
    kept = [c for c in chosen if sizes[classes.index(c)] >= MIN_GAN_IMAGES]
    return kept, [c for c in chosen if c not in kept]


def augmentation_counts(labels, classes: Sequence[str], chosen: Sequence[str],
                        policy) -> dict:
    """How many images to generate per chosen class.

    Args:
        labels: ``(n,)`` training labels (class indices).
        classes: Class names.
        chosen: Classes to augment.
        policy: ``"balance"`` (up to the largest class's count), an int N (N more per
            chosen class; the report adds 250 to each male class and 400 to each
            surprise class), or ``{class: N}``.

    Returns:
        ``{class: count}`` for the chosen classes, counts >= 0.

    Raises:
        ValueError: A class not in ``classes``, a negative count, an unknown policy.

    Reference:
        NITK report, Sec. 6.1, Figures 13 and 18.
    """
    unknown = [c for c in chosen if c not in classes]
    if unknown:
        raise ValueError(f"cannot augment {unknown}: not among the classes {list(classes)}")
    sizes = np.bincount(np.asarray(labels), minlength=len(classes))
    if policy == "balance":
        top = int(sizes.max())
        counts = {c: top - int(sizes[classes.index(c)]) for c in chosen}
    elif isinstance(policy, dict):
        missing = [c for c in chosen if c not in policy]
        if missing:
            raise ValueError(f"no count given for {missing}")
        counts = {c: int(policy[c]) for c in chosen}
    elif isinstance(policy, (int, np.integer)) and not isinstance(policy, bool):
        counts = {c: int(policy) for c in chosen}
    else:
        raise ValueError(f"augmentation policy must be 'balance', an int or a dict, got "
                         f"{policy!r}")
    if any(v < 0 for v in counts.values()):
        raise ValueError(f"negative augmentation counts {counts}")
    return counts


def _gan_batches(scaled: np.ndarray, batch_size: int, seed: int, epochs: tuple,
                 steps_per_epoch: int):
    """Batches of the GAN's real images ``scaled`` (in [-1, 1]), each drawn from
    ``(seed, epoch, step)``."""
    first, stop = epochs
    size = min(batch_size, len(scaled))

    def batches():
        for epoch in range(first, stop):
            rng = np.random.default_rng(seeds.derive(seed, "gan-batches", epoch))
            for _ in range(steps_per_epoch):
                yield scaled[rng.choice(len(scaled), size, replace=False)]

    spec = tf.TensorSpec((size, *scaled.shape[1:]), tf.float32)
    return tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(
        tf.data.AUTOTUNE), steps_per_epoch


def train_class_gan(images: np.ndarray, config, schedule: GANSchedule, folder: str,
                    seed: int, title: str, verbose="auto") -> dict:
    """Train one class's DCGAN: D1 until the generator loss drops, then D2.

    Args:
        images: ``(n, 224, 224, 1)`` training images of the class, [0, 255]; resized
            to the GAN's ``config.image_size`` (antialiased bilinear) when it differs.
        config: `keras_ser.models.nitk_gan.NITKGANConfig` or preset name.
        schedule: `GANSchedule`.
        folder: Run folder of this GAN: ``d1/`` and ``d2/`` checkpoints, ``logs/``
            (TensorBoard losses and grids), ``grids/`` (PNG per epoch),
            ``generator.keras``.
        seed: Seed of the weights, the noise and the batches.
        title: Name in messages.
        verbose: Keras ``fit`` verbosity.

    Returns:
        ``{"generator": keras.Model, "history": {"d1": [...], "d2": [...]},
        "switch_epoch": int}`` (epochs are ``schedule.steps_per_epoch`` steps).

    Raises:
        ValueError: Fewer than 2 images.
        DivergenceError: A loss became NaN, infinite or above `GAN_DIVERGENCE_LIMIT`
            (before any image is generated).

    Reference:
        NITK report, Sec. 6.1.
    """
    if len(images) < MIN_GAN_IMAGES:
        raise ValueError(f"{title}: a GAN needs at least 2 training images, got {len(images)}")
    keras.utils.set_random_seed(seed)
    generator = nitk_gan.build_generator(config)
    # The GAN's own image size (the ``cpu`` preset shrinks 224 -> 64).
    real = nitk_gan.to_gan_image(np.asarray(images, np.float32),
                                 nitk_gan.get_config(config).image_size).astype(np.float32)
    noise = np.random.default_rng(seed).standard_normal((16, generator.input_shape[-1]))

    def as_spectrogram(z, training=False):
        return nitk_gan.spectrogram_view(generator(z, training=training))

    history, done = {}, 0
    d1_epochs = max(1, int(schedule.epochs * schedule.max_d1_fraction))
    for stage, budget in (("d1", d1_epochs), ("d2", schedule.epochs)):
        trainer = bce_gan.build_trainer(generator, stage, config, seeds.derive(seed, stage),
                                        schedule.d_lr, schedule.g_lr)
        grids = plots.SpectrogramGridCallback(
            as_spectrogram, noise.astype(np.float32), log_dir=os.path.join(folder, "logs"),
            png_dir=os.path.join(folder, "grids"), tag=f"{stage}_generated")
        switch = bce_gan.GeneratorLossDropped(schedule.switch_ratio) if stage == "d1" else None
        # D2 continues the epoch count where D1 stopped, so a stage-2 checkpoint holds
        # the whole budget's remainder.
        stop, stage_seed = budget - (0 if stage == "d1" else done), seeds.derive(seed, stage)
        state = fit_resumable(
            trainer, lambda first, n=stop, s=stage_seed: _gan_batches(
                real, schedule.batch_size, s, (first, n), schedule.steps_per_epoch),
            directory=os.path.join(folder, stage), epochs=stop, seed=stage_seed,
            stage=f"{title} {stage}", early_stopping=switch, callbacks=[grids],
            verbose=verbose, log_dir=os.path.join(folder, "logs", stage),
            divergence_limit=GAN_DIVERGENCE_LIMIT)
        history[stage] = state["history"]
        done += int(state["epochs_done"]) if stage == "d1" else 0
    io.save_model(generator, os.path.join(folder, "generator.keras"))
    return {"generator": generator, "history": history, "switch_epoch": done}


def fold_gans(split: Split, utterances: data.Utterances, bank: ImageBank,
              classes: Sequence[str], counts: dict, config, schedule: GANSchedule,
              folder: str, seed: int, verbose="auto") -> dict:
    """Train the fold's per-class GANs (or reuse them) and generate their images.

    Args:
        split: The fold; GANs see its training images only.
        utterances, bank: The corpus and its images.
        classes: Class names (index order of ``utterances.labels``).
        counts: ``{class: images to generate}`` (`augmentation_counts`).
        config, schedule: GAN preset and budget.
        folder: ``<folder>/<class>/`` holds each GAN's run and ``generated.npz``.
        seed: Fold seed (each class derives its own).
        verbose: Keras ``fit`` verbosity.

    Returns:
        ``{"images": (k, 224, 224, 1) float32 [0, 255], "labels": (k,) int64,
        "gans": {class: {"images", "real", "switch_epoch", "final_g_loss",
        "final_d_loss"}}}``; a class with a count of 0 gets no GAN.

    Stored images are reused only when made from the same inputs: ``generated.npz``
    keeps them (``inputs``, JSON: the count, the GAN config, the schedule, the class's
    seed and the SHA-1 of its training images). When they differ, or the file predates
    that record, one line says so, the class's folder is deleted (so no checkpoint of
    another budget is resumed) and its GAN is trained and its images generated again.
    A GAN interrupted before ``generated.npz`` resumes from its checkpoints when its
    folder's ``training_inputs.json`` (the same record without the count) matches;
    otherwise its folder is deleted first.

    Raises:
        ValueError: A class with fewer than 2 training images (`train_class_gan`;
            filter with `gan_classes` first), or an unknown class name.
        DivergenceError: A GAN's loss diverged (`train_class_gan`).
    """
    images, labels, report = [], [], {}
    gan_config = nitk_gan.get_config(config).to_dict()
    for name in [c for c in counts if counts[c] > 0]:
        k = classes.index(name)
        path = os.path.join(folder, name)
        done = os.path.join(path, "generated.npz")
        own = split.train[utterances.labels[split.train] == k]
        inputs = json.loads(json.dumps({  # as read back from the file
            "count": int(counts[name]), "config": gan_config, "schedule": schedule.to_dict(),
            "seed": int(seed),
            "images": hashlib.sha1(np.ascontiguousarray(bank.images[own])).hexdigest()}))
        previous = _stored_inputs(done)
        if previous != inputs:
            if previous is not None:
                changed = (", ".join(c for c in inputs if previous.get(c) != inputs[c])
                           if previous else "not recorded")
                print(f"GAN {name} ({split.name}): {done} was made from other inputs "
                      f"({changed}); training it again", flush=True)
            # An unfinished GAN of the same training inputs resumes from its checkpoints;
            # anything else in the folder (another budget, images, seed) is removed.
            training = {key: value for key, value in inputs.items() if key != "count"}
            started = os.path.join(path, "training_inputs.json")
            if previous is not None or not os.path.isfile(started) or \
                    io.read_json(started) != training:
                shutil.rmtree(path, ignore_errors=True)
                io.write_json(started, training)
            run = train_class_gan(bank.images[own], config, schedule, path,
                                  seeds.derive(seed, "gan", name), f"GAN {name}", verbose)
            made = nitk_gan.from_gan_image(bce_gan.generate(
                run["generator"], counts[name], seeds.derive(seed, "generate", name)),
                size=bank.images.shape[1])[..., :1]
            last = (run["history"].get("d2") or run["history"]["d1"])[-1]
            io.save_npz(done, images=np.asarray(made, np.float32),
                        switch_epoch=run["switch_epoch"], final_g_loss=last["g_loss"],
                        final_d_loss=last["d_loss"], real=len(own),
                        inputs=np.array(json.dumps(inputs, sort_keys=True)))
            plots.save_png(plots.spectrogram_grid(nitk_gan.spectrogram_view(
                nitk_gan.to_gan_image(np.asarray(made[:16])))), os.path.join(
                    path, "generated.png"))
        with np.load(done) as stored:
            images.append(stored["images"])
            labels.append(np.full(len(stored["images"]), k, np.int64))
            report[name] = {"images": len(stored["images"]), "real": int(stored["real"]),
                            "switch_epoch": int(stored["switch_epoch"]),
                            "final_g_loss": float(stored["final_g_loss"]),
                            "final_d_loss": float(stored["final_d_loss"])}
    side = bank.images.shape[1:]
    return {"images": np.concatenate(images) if images else np.zeros((0, *side), np.float32),
            "labels": np.concatenate(labels) if labels else np.zeros(0, np.int64),
            "gans": report}


def _stored_inputs(path: str) -> dict | None:
    """The ``inputs`` record of a ``generated.npz``: None without the file, ``{}`` for a
    file written before the record existed."""
    if not os.path.isfile(path):
        return None
    with np.load(path) as stored:
        return json.loads(str(stored["inputs"])) if "inputs" in stored.files else {}


def _batches(inputs: np.ndarray, labels: np.ndarray, classes: int, batch_size: int,
             seed: int, epochs: tuple, rgb: bool):
    """Shuffled ``(inputs, one-hot)`` batches of epochs ``first..stop-1``; epoch e's
    order comes from ``(seed, e)`` alone, so a resumed run sees the same batches."""
    first, stop = epochs
    onehot = np.eye(classes, dtype=np.float32)[labels]

    def batches():
        for epoch in range(first, stop):
            order = np.random.default_rng(seeds.derive(seed, "batches", epoch)).permutation(
                len(inputs))
            for start in range(0, len(order), batch_size):
                chosen = order[start:start + batch_size]
                x = inputs[chosen]
                yield (np.repeat(x, 3, axis=-1) if rgb else x), onehot[chosen]

    shape = (None, *inputs.shape[1:-1], 3) if rgb else (None, *inputs.shape[1:])
    spec = (tf.TensorSpec(shape, tf.float32), tf.TensorSpec((None, classes), tf.float32))
    steps = math.ceil(len(inputs) / batch_size)
    return tf.data.Dataset.from_generator(batches, output_signature=spec).prefetch(
        tf.data.AUTOTUNE), steps


_FORWARD = weakref.WeakKeyDictionary()


def _inference(model):
    """``model`` in inference mode as one `tf.function` per model (traced once, reused)."""
    if model not in _FORWARD:
        _FORWARD[model] = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return _FORWARD[model]


def _predict(model, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    forward = _inference(model)
    parts = [np.asarray(forward(inputs[i:i + batch_size]))
             for i in range(0, len(inputs), batch_size)]
    return np.concatenate(parts)


def train_classifier(name: str, split: Split, utterances: data.Utterances, bank: ImageBank,
                     classes: Sequence[str], out_dir: str, *, config, epochs: int, seed: int,
                     network_seed: int, weights: str | None = None, synthetic: dict | None = None,
                     cache: FeatureCache | None = None, row: str | None = None,
                     verbose="auto") -> dict:
    """Train one transfer classifier on a fold and score it.

    Args:
        name: Key of `keras_ser.models.transfer.CLASSIFIERS`.
        split: The fold.
        utterances, bank: The corpus and its images.
        classes: Class names.
        out_dir: Run folder: ``ckpt/`` (while training; removed once the fold is
            scored), ``logs/``, ``model.keras`` (the waveform-free image classifier),
            ``predictions.npz``.
        config: `keras_ser.models.transfer.TransferConfig` or preset name.
        epochs: Epoch budget.
        seed: Seed of the head's weights and the batches.
        network_seed: Seed of the random initialisation of the base when ``weights`` is
            None: the same for every fold, as ImageNet weights would be, so the frozen
            features of an image are computed once per run.
        weights: ``"imagenet"``, a weight file, or None (`transfer.resolve_weights`).
        synthetic: ``{"images": (k, 224, 224, 1), "labels": (k,)}`` generated training
            images added to the real ones (`fold_gans`), or None.
        cache: A `FeatureCache`; None trains the whole network on images every epoch
            (the frozen part recomputed each step; same results, slower).
        row: Table row (default ``name``, plus ``+gan`` with ``synthetic``).
        verbose: Keras ``fit`` verbosity.

    Returns:
        Dict with ``row``, ``fold``, ``protocol``, ``speakers``, ``classes``,
        ``epochs``, ``best_epoch``, ``train`` (accuracy on the images trained on),
        ``train_real`` (on the real training images), ``validation`` (the validation
        speakers' report; None for the random split) and ``test``
        (`keras_ser.metrics.classification_report` plus ``train_accuracy`` and
        ``validation_accuracy``), ``synthetic`` (images added per class).

    Raises:
        FileNotFoundError: Missing weight file.
        ValueError: A checkpoint of another configuration in ``out_dir``.

    Reference:
        NITK report, Sec. 6.2 and Figure 19.
    """
    config = transfer.get_config(config)
    keras.utils.set_random_seed(network_seed)
    net = transfer.build_transfer(name, len(classes), config, weights,
                                  image_size=bank.images.shape[1], head_seed=seed)
    keras.utils.set_random_seed(seed)
    images = bank.images[split.train]
    labels = utterances.labels[split.train]
    if synthetic is not None and len(synthetic["labels"]):
        images = np.concatenate([images, synthetic["images"]])
        labels = np.concatenate([labels, synthetic["labels"]])
    if cache is not None:
        inputs = cache.features(net, images)
        net.standardise(inputs)
        model = net.compile(net.head)
        val_inputs = cache.features(net, bank.images[split.validation])
        forward = net.head
    else:
        if net.config.standardise:
            net.standardise(FeatureCache(None).features(net, images))
        model = net.compile(net.logits)
        inputs, val_inputs, forward = images, bank.rgb(split.validation), net.logits
    val_labels = utterances.labels[split.validation]
    selecting = split.protocol == "speaker"

    def validation_logs(epoch):
        return {"val_wa": metrics.weighted_accuracy(
            val_labels, _predict(forward, val_inputs).argmax(axis=1))}

    state = fit_resumable(
        model, lambda first: _batches(inputs, labels, len(classes), config.batch_size, seed,
                                      (first, epochs), rgb=cache is None),
        directory=os.path.join(out_dir, "ckpt"), epochs=epochs, seed=seed,
        stage=f"{row or name} {split.name}",
        early_stopping=PersistentEarlyStopping("val_wa", epochs) if selecting else None,
        callbacks=[LambdaLogs(validation_logs)] if selecting else [], verbose=verbose,
        log_dir=os.path.join(out_dir, "logs"))
    train_pred = np.concatenate([_predict(forward, np.repeat(inputs[i:i + 256], 3, axis=-1)
                                          if cache is None else inputs[i:i + 256])
                                 for i in range(0, len(inputs), 256)]).argmax(axis=1)
    real = len(split.train)
    scorer = Scorer(net.classifier, front_end(), batch_size=64)
    scores = scorer.score(utterances.select(split.test))
    test_labels = utterances.labels[split.test]
    result = {
        "row": row or name + (AUGMENTED if synthetic is not None else ""), "fold": split.name,
        "protocol": split.protocol, "speakers": split.speakers, "classes": list(classes),
        "network": name, "config": config.to_dict(), "weights": weights or "random",
        "epochs": int(state["epochs_done"]),
        "best_epoch": (int(state["early_stopping"]["best_epoch"]) + 1 if selecting
                       else int(state["epochs_done"])),
        "train": metrics.weighted_accuracy(labels, train_pred),
        "train_real": metrics.weighted_accuracy(labels[:real], train_pred[:real]),
        "synthetic": {c: int((labels[real:] == k).sum()) for k, c in enumerate(classes)
                      if (labels[real:] == k).any()},
        "validation": (metrics.classification_report(
            val_labels, _predict(forward, val_inputs), classes) if selecting else None),
        "test": metrics.classification_report(test_labels, scores.predicted, classes)}
    if synthetic is not None and "gans" in synthetic:
        result["gans"] = synthetic["gans"]
    result["test"]["train_accuracy"] = result["train"]
    result["test"]["validation_accuracy"] = (result["validation"]["wa"] if selecting
                                             else result["test"]["wa"])
    for c, value in result["test"]["recall"].items():
        result["test"][f"recall_{c}"] = value
    io.save_npz(os.path.join(out_dir, "predictions.npz"),
                utterance_id=np.array([utterances.ids[i] for i in split.test]),
                probabilities=scores.probabilities)
    io.save_model(net.classifier, os.path.join(out_dir, "model.keras"))
    # The fold is scored and its model saved: its epoch checkpoints (the whole trainable
    # part, 37 MB for vgg16_half) are no longer needed (our choice; a run killed before
    # its result.json is written retrains this fold, with the same result).
    shutil.rmtree(os.path.join(out_dir, "ckpt"), ignore_errors=True)
    return result


def original_row(row: str) -> str:
    """The original row of a table row (``"vgg16_fc+gan"`` -> ``"vgg16_fc"``): the
    ``seed_key`` of `keras_ser.experiment.run_folds`, so that a ``+gan`` row shares its
    original row's seed in every fold and the pair differs only in its training data."""
    return row.removesuffix(AUGMENTED)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The checked options of one run of the NITK recipe, and its per-fold steps.

    Build it with `Plan.check`; the recipe then calls `gan_images` and `train` per fold.

    Attributes:
        classes: Class names (index order of the labels).
        names: The selected classifiers (keys of `transfer.CLASSIFIERS`).
        rows: Table rows: ``names`` and/or ``name + AUGMENTED`` (``training_sets``).
        model: `keras_ser.models.transfer.TransferConfig` (batch size of ``settings``;
            frozen features standardised with random bases).
        settings: The classifiers' `keras_ser.experiment.Schedule`.
        gans: `GANSchedule` of each class's GAN.
        gan_preset: `keras_ser.models.nitk_gan` preset name.
        policy: `parse_policy` of ``--augment-count``.
        augment: Classes named for augmentation (empty: the ``smallest`` classes of each
            fold's training set).
        smallest: How many minority classes to augment when ``augment`` is empty.
        weights: ``"imagenet"``, a weight file, or None (random initialisation).
        options: The option texts the header quotes (``label``, ``augment``,
            ``augment_count``, ``preset``).
    """

    classes: tuple
    names: tuple
    rows: tuple
    model: transfer.TransferConfig
    settings: object
    gans: GANSchedule
    gan_preset: str
    policy: object
    augment: tuple
    smallest: int
    weights: str | None
    options: dict

    @classmethod
    def check(cls, *, classes, names, training_sets: str, preset: str, settings,
              gans: GANSchedule, gan_preset: str | None, weights: str, augment: str | None,
              augment_count: str, smallest: int, label: str) -> Plan:
        """Check the options before any image is computed.

        Args:
            classes: Class names.
            names: The selected classifiers; only their networks' weights are looked for.
            training_sets: ``"both"``, ``"original"`` or ``"augmented"`` (Figure 19's
                rows trained on the original images, on the augmented ones, or both).
            preset: Classifier preset (`keras_ser.models.transfer.TRANSFER_PRESETS`).
            settings: Classifier `keras_ser.experiment.Schedule` (its batch size is used).
            gans: `GANSchedule`.
            gan_preset: GAN preset (None: ``preset``).
            weights: ``"none"``, ``"imagenet"`` or a weight file.
            augment: Comma-separated classes to augment (empty items ignored), or None.
            augment_count: ``balance``, ``N`` or ``class=N,...`` (`parse_policy`).
            smallest: Minority classes to augment per fold without ``augment``.
            label: Label name (for the header).

        Returns:
            The `Plan`.

        Raises:
            ValueError: Unknown classes to augment, a bad ``augment_count``, ``class=N``
                counts without ``augment`` naming those classes, or one weight file for
                classifiers of two networks (VGG16 and ResNet50).
            FileNotFoundError: A missing weight file (`transfer.resolve_weights`).
        """
        base = None if weights == "none" else weights
        networks = sorted({transfer.CLASSIFIERS[c].network for c in names})
        if base not in (None, "imagenet") and len(networks) > 1:
            raise ValueError(f"--weights {weights}: a single weight file fits one network, "
                             f"but the classifiers {','.join(names)} use "
                             f"{' and '.join(networks)}; choose --classifiers of one "
                             f"network, or --weights imagenet")
        for network in networks:
            transfer.resolve_weights(network, base)
        policy = parse_policy(augment_count)
        chosen = tuple(c for c in (augment or "").split(",") if c)
        unknown = [c for c in chosen if c not in classes]
        if unknown:
            raise ValueError(f"--augment {unknown}: not among the classes {classes}")
        if isinstance(policy, dict) and (not chosen or set(chosen) - set(policy)):
            raise ValueError("--augment-count class=N needs --augment naming those classes")
        rows = ((list(names) if training_sets != "augmented" else [])
                + ([n + AUGMENTED for n in names] if training_sets != "original" else []))
        model = transfer.get_config(preset).replace(batch_size=settings.batch_size,
                                                    standardise=base is None)
        return cls(tuple(classes), tuple(names), tuple(rows), model, settings, gans,
                   gan_preset or preset, policy, chosen, smallest, base,
                   {"label": label, "augment": augment, "augment_count": augment_count,
                    "preset": preset, "weights": weights})

    def header(self, scheme: str, folds: Sequence) -> list:
        """The bullet lines under the results title.

        Args:
            scheme: ``"loso-speaker"``, ``"kfold"`` or ``"random"``.
            folds: The folds run.

        Returns:
            Markdown lines (no bullets): classes, protocol (with what "Validation
            accuracy" measures), augmented classes, preset values, paired seeds, base
            weights.
        """
        o, model, gans = self.options, self.model, self.gans
        side = nitk_gan.get_config(self.gan_preset).image_size
        weights_note = ("random initialisation (no ImageNet weights can be downloaded "
                        "here), frozen features standardised on each fold's training images"
                        if self.weights is None else self.weights)
        return [f"Classes ({o['label']}): {', '.join(self.classes)}",
                f"Protocol: {scheme}, {len(folds)} fold(s)"
                + ("; the validation speaker picks the epoch, and 'Validation accuracy' is "
                   "measured on that same speaker (so it is optimistic; the test speakers "
                   "are unseen)." if scheme != "random" else
                   " (the report's: speakers mixed, the last epoch kept, 'validation' = the "
                   "held-out 20 %)."),
                (f"Augmented classes: "
                 f"{o['augment'] or f'the {self.smallest} smallest per fold'}"
                 f", count: {o['augment_count']}."),
                (f"Preset {o['preset']}: images 224 x 224 seen at {model.input_size} x "
                 f"{model.input_size}, head {model.head_units} units, "
                 f"{self.settings.max_epochs} epochs, batch {self.settings.batch_size}, SGD "
                 f"{model.learning_rate:g} (momentum {model.momentum:g}), loss "
                 f"{model.loss}; GAN preset {self.gan_preset} ({side} x {side} images), "
                 f"{gans.steps} updates per class, Adam D {gans.d_lr:g} / G {gans.g_lr:g}."),
                ("Paired seeds: each + GAN row uses its original row's seed in every fold "
                 "(head initialisation, dropout, batch draws), so a pair differs only in "
                 "its training data."),
                f"Base weights: {weights_note}."]

    def gan_images(self, row: str, split: Split, utterances: data.Utterances,
                   bank: ImageBank, folder: str, seed: int, verbose="auto") -> dict | None:
        """The fold's generated training images for a ``+gan`` row (NITK report, Sec. 6.1).

        The classes to augment (``augment``, or the fold's ``smallest`` minority classes)
        that have at least `MIN_GAN_IMAGES` training images each get a GAN (`fold_gans`;
        one line names the others); the fold's ``+gan`` rows share these GANs.

        Args:
            row: Table row; an original row gets None.
            split: The fold.
            utterances, bank: The corpus and its images.
            folder: The fold's GAN folder (``<out>/gans/<fold>``).
            seed: The fold's seed.
            verbose: Keras ``fit`` verbosity.

        Returns:
            `fold_gans` output, or None for an original row.

        Raises:
            DivergenceError: A GAN's loss diverged.
        """
        if not row.endswith(AUGMENTED):
            return None
        classes = list(self.classes)
        labels = utterances.labels[split.train]
        chosen, skipped = gan_classes(labels, classes, list(self.augment) or (
            minority_classes(labels, classes, self.smallest)))
        if skipped:
            print(f"[{row}] {split.name}: not augmenting {', '.join(skipped)}: fewer than "
                  f"{MIN_GAN_IMAGES} training images, no GAN can train")
        return fold_gans(split, utterances, bank, classes,
                         augmentation_counts(labels, classes, chosen, self.policy),
                         self.gan_preset, self.gans, folder, seed, verbose)

    def train(self, row: str, split: Split, utterances: data.Utterances, bank: ImageBank,
              out_dir: str, *, seed: int, network_seed: int, synthetic: dict | None,
              cache: FeatureCache | None, verbose="auto") -> dict:
        """`train_classifier` for a table row (NITK report, Sec. 6.2 and Figure 19), with
        this plan's configuration, epochs and weights; see there for the arguments,
        result and errors."""
        return train_classifier(original_row(row), split, utterances, bank,
                                list(self.classes), out_dir, config=self.model,
                                epochs=self.settings.max_epochs, seed=seed,
                                network_seed=network_seed, weights=self.weights,
                                synthetic=synthetic, cache=cache, row=row, verbose=verbose)
