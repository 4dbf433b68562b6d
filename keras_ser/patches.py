"""Fixed-size log-mel patches of whole corpora held in memory (SN-GAN training).

Eskimez et al. (Interspeech 2020, Sec. 4.2) train on 128 x 128 patches of log-mel
spectrograms (32 ms window, 16 ms hop, 512-point FFT, 128 mel bands) min-max normalised
to [-1, 1] with the minimum and maximum of the combined corpora. A `PatchBank` computes
every utterance's log-mel once (in the graph, with
`keras_ser.features.log_mel_spectrogram`, the code the exported models use), then serves

* `PatchBank.dataset`: a ``tf.data`` stream of random patches (uniform over
  utterances, then over start frames: our choice, the paper does not say how patches
  are drawn), with the utterance's emotion index, drawn per
  epoch from seeds of ``(seed, epoch)``;
* `PatchBank.sample`: a fixed random set of patches (for Fréchet distances and grids).

Scoring does not use patches: the test files go through `keras_ser.scoring`, the
sliding windows of the exported model.

Utterances shorter than a patch are padded at the end with -1, the normalised minimum
(the quietest value the features take; our choice).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_ser import data as kdata
from keras_ser import features as kfeatures
from keras_ser import seeds

AUTOTUNE = tf.data.AUTOTUNE


class PatchBank:
    """Log-mel spectrograms (dB) of a set of utterances, for patch sampling.

    Args:
        mels: List of ``(frames_i, n_mels)`` float32 log-mel spectrograms in dB.
        labels: ``(n,)`` emotion indices (``-1`` for unlabelled speech).
        speakers, ids: Per-utterance strings.
        source: Description for messages (e.g. the record folders).

    Raises:
        ValueError: Lengths disagree, a spectrogram is not 2-D with the same number of
            mel bands as the others, or holds non-finite values (the message names the
            utterance).
    """

    def __init__(self, mels: Sequence[np.ndarray], labels, speakers: Sequence[str],
                 ids: Sequence[str], source: str = "patch bank"):
        labels = np.asarray(labels, np.int64)
        if not (len(mels) == len(labels) == len(speakers) == len(ids)):
            raise ValueError(f"{source}: {len(mels)} spectrograms, {len(labels)} labels, "
                             f"{len(speakers)} speakers, {len(ids)} ids")
        bands = {int(m.shape[1]) for m in mels if np.ndim(m) == 2}
        for m, uid in zip(mels, ids):
            if np.ndim(m) != 2 or len(bands) != 1:
                raise ValueError(f"{source}: utterance {uid} has log-mel shape "
                                 f"{np.shape(m)}; every one must be (frames, {bands})")
            if not np.all(np.isfinite(m)):
                raise ValueError(f"{source}: utterance {uid} has non-finite log-mel values")
        self.mels = [np.asarray(m, np.float32) for m in mels]
        self.labels = labels
        self.speakers = list(speakers)
        self.ids = list(ids)
        self.source = source

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: str | Sequence[str], features, *,
                     classes: Sequence[str] | None = None, speakers=None,
                     labelled: bool = True) -> PatchBank:
        """Log-mels of converted records (`tfrecords_tools` folders).

        Args:
            records: Record folder(s) or shard files.
            features: `FeatureConfig` or preset name (e.g. ``PRESETS["eskimez"]``
                with ``n_mels`` set to the patch height).
            classes: Emotion classes in label order; with ``labelled``, utterances of
                other emotions are dropped.
            speakers: Keep only these speakers (``None``: all).
            labelled: ``False`` gives every utterance the label -1 (unlabelled speech).

        Raises:
            FileNotFoundError: No shards.
            ValueError: No utterance left after filtering (the message names the records).
        """
        config = kfeatures.get_preset(features)
        wanted = None if speakers is None else set(speakers)
        log_mel = tf.function(
            lambda w: kfeatures.log_mel_spectrogram(w, config),
            input_signature=[tf.TensorSpec([None], tf.float32)])
        mels, labels, spk, ids = [], [], [], []
        for ex in kdata.read_records(records):
            speaker = ex["speaker"].numpy().decode()
            if wanted is not None and speaker not in wanted:
                continue
            emotion = ex["emotion"].numpy().decode()
            if labelled:
                if classes is None or emotion not in classes:
                    continue
                label = list(classes).index(emotion)
            else:
                label = -1
            wave = ex["waveform"].numpy().astype(np.float32)
            if len(wave) < config.window_samples:
                continue
            mels.append(log_mel(tf.constant(wave)).numpy())
            labels.append(label)
            spk.append(speaker)
            ids.append(ex["utterance_id"].numpy().decode())
        if not mels:
            raise ValueError(f"no utterances in {records} for speakers {speakers} and "
                             f"classes {classes}")
        return cls(mels, labels, spk, ids, source=str(records))

    def subset(self, speakers=None, labelled: bool | None = None) -> PatchBank:
        """The utterances of ``speakers`` (``None``: all); ``labelled`` filters by label."""
        keep = [i for i, s in enumerate(self.speakers)
                if (speakers is None or s in set(speakers))
                and (labelled is None or (self.labels[i] >= 0) == labelled)]
        if not keep:
            raise ValueError(f"{self.source}: no utterances of speakers {speakers}")
        return PatchBank([self.mels[i] for i in keep], self.labels[keep],
                         [self.speakers[i] for i in keep], [self.ids[i] for i in keep],
                         source=self.source)

    @staticmethod
    def join(banks: Sequence[PatchBank]) -> PatchBank:
        """All utterances of several banks in one."""
        return PatchBank([m for b in banks for m in b.mels],
                         np.concatenate([b.labels for b in banks]),
                         [s for b in banks for s in b.speakers],
                         [i for b in banks for i in b.ids],
                         source=" + ".join(b.source for b in banks))

    # -- facts ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.mels)

    @property
    def n_mels(self) -> int:
        """Mel bands per frame."""
        return int(self.mels[0].shape[1])

    @property
    def frames(self) -> np.ndarray:
        """``(n,)`` lengths in frames."""
        return np.array([len(m) for m in self.mels], np.int64)

    def minmax(self) -> tuple:
        """Smallest and largest log-mel value (dB) over all utterances."""
        return (float(min(m.min() for m in self.mels)),
                float(max(m.max() for m in self.mels)))

    @staticmethod
    def normalise(mel: np.ndarray, minmax: tuple) -> np.ndarray:
        """Min-max map of dB values to [-1, 1] (values outside ``minmax`` are clipped)."""
        low, high = minmax
        return np.clip(2.0 * (mel - low) / (high - low) - 1.0, -1.0, 1.0).astype(np.float32)

    def _normalised(self, minmax):
        return [self.normalise(m, minmax) for m in self.mels]

    @staticmethod
    def _cut(mel: np.ndarray, start: int, width: int) -> np.ndarray:
        piece = mel[start:start + width]
        if len(piece) < width:
            piece = np.concatenate([piece, np.full((width - len(piece), mel.shape[1]), -1.0,
                                                   np.float32)])
        return piece

    def sample(self, count: int, width: int, minmax: tuple, seed: int = 0,
               labels: bool = False):
        """``count`` random patches ``(count, width, n_mels)`` in [-1, 1] (with labels)."""
        rng = np.random.default_rng(seed)
        normed = self._normalised(minmax)
        which = rng.integers(0, len(normed), count)
        out = np.stack([self._cut(normed[i], int(rng.integers(0, max(1, len(normed[i]) -
                                                                    width + 1))), width)
                        for i in which])
        return (out, self.labels[which]) if labels else out

    def dataset(self, batch_size: int, width: int, minmax: tuple, seed: int = 0,
                balance: bool = False, epochs: tuple | None = None,
                steps: int | None = None) -> tf.data.Dataset:
        """Batches ``{"features": (batch, width, n_mels), "label": (batch,)}``.

        Args:
            batch_size: Patches per batch.
            width: Patch width in frames.
            minmax: ``(min_db, max_db)`` of the min-max normalisation.
            seed: Sampling seed.
            balance: Draw the emotion uniformly first, then an utterance of it
                (labelled banks only); default: utterances uniformly.
            epochs: ``(first, stop)``: ``steps`` batches for each epoch of the range,
                each epoch drawn from a generator seeded by ``(seed, epoch)`` (a resumed
                run draws what an uninterrupted one draws); ``None``: an endless stream.
            steps: Batches per epoch (required with ``epochs``).

        Raises:
            ValueError: ``epochs`` without ``steps``.
        """
        if epochs is not None and not steps:
            raise ValueError("PatchBank.dataset: epochs needs steps (batches per epoch)")
        normed = self._normalised(minmax)
        labels = self.labels
        by_class = [np.flatnonzero(labels == c) for c in range(int(labels.max()) + 1)]
        by_class = [idx for idx in by_class if len(idx)]

        def draw(rng):
            if balance:
                which = np.array([rng.choice(by_class[k]) for k in
                                  rng.integers(0, len(by_class), batch_size)])
            else:
                which = rng.integers(0, len(normed), batch_size)
            starts = [int(rng.integers(0, max(1, len(normed[i]) - width + 1))) for i in which]
            return {"features": np.stack([self._cut(normed[i], s, width)
                                          for i, s in zip(which, starts)]),
                    "label": labels[which].astype(np.int32)}

        def batches():
            if epochs is None:
                rng = np.random.default_rng(seed)
                while True:
                    yield draw(rng)
            for epoch in range(*epochs):
                rng = np.random.default_rng(seeds.derive(seed, epoch))
                for _ in range(steps):
                    yield draw(rng)

        spec = {"features": tf.TensorSpec([batch_size, width, self.n_mels], tf.float32),
                "label": tf.TensorSpec([batch_size], tf.int32)}
        ds = tf.data.Dataset.from_generator(batches, output_signature=spec)
        if epochs is not None:
            ds = ds.apply(tf.data.experimental.assert_cardinality(
                steps * max(0, epochs[1] - epochs[0])))
        return ds.prefetch(AUTOTUNE)
