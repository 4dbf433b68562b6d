"""Throughput of the feature pipeline: tf.data vs a plain librosa loop vs in-memory tensors.

All three compute the same thing for every EmoDB utterance: a random word-centred crop
of 128 frames (a random syllable, a random centre inside it, zero padding at the edges),
VTLP with a random factor in [0.9, 1.1) (eq. 1 of Etienne et al. 2018, applied to the mel
filterbank), and the Eskimez log-mel (32 ms / 16 ms, 512-point FFT, 128 Slaney mels, dB):

- tf.data: `keras_ser.data.make_dataset` reading the TFRecord shards (decode, crop, VTLP,
  log-mel on batches of 32), no caching, so every epoch decodes the records again;
- librosa: a Python loop reading each wav with soundfile and its syllables from silb/,
  cropping with NumPy and computing the same features with librosa;
- in-memory: the same TensorFlow ops on waveforms already decoded into a ragged tensor
  (a `tf.function` per batch), the ceiling for the tf.data path.

The two implementations are first checked to agree on a fixed crop and factor.

Usage::

    python benchmarks/feature_pipeline.py [--emodb ../shared/data/emodb] [--epochs 5]

The last line is ``ratio: X`` (tf.data utterances/s over librosa utterances/s).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMES = 128
BATCH = 32


def librosa_features(wave, segments, rng, cfg, edges, bin_freqs):
    """One utterance through crop -> VTLP -> log-mel with NumPy and librosa."""
    import librosa

    from keras_ser.augment import vtlp_warp

    width = cfg.samples_for_frames(FRAMES)
    start, end = segments[rng.integers(len(segments))]
    end = min(end, len(wave) / cfg.sample_rate)
    centre = min(int(round((start + (end - start) * rng.random()) * cfg.sample_rate)),
                 len(wave) - 1)
    alpha = rng.uniform(0.9, 1.1)
    return crop_and_featurise(wave, centre, alpha, cfg, edges, bin_freqs, width, librosa,
                              vtlp_warp)


def crop_and_featurise(wave, centre, alpha, cfg, edges, bin_freqs, width, librosa,
                       vtlp_warp):
    """Crop ``width`` samples around ``centre`` (zero-padded) and compute the log-mel."""
    begin = centre - width // 2
    padded = np.pad(wave, (width, width))
    crop = padded[begin + width:begin + 2 * width]
    power = np.abs(librosa.stft(crop, n_fft=cfg.fft_size, hop_length=cfg.hop_samples,
                                win_length=cfg.window_samples, window="hann",
                                center=False)) ** 2
    warped = vtlp_warp(bin_freqs, alpha, cfg.sample_rate / 2)[:, None]
    lower, centre_hz, upper = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(0, np.minimum((warped - lower) / (centre_hz - lower),
                                       (upper - warped) / (upper - centre_hz)))
    weights *= 2.0 / (upper - lower)
    mel = weights.T @ power
    return librosa.power_to_db(mel, ref=1.0, amin=cfg.amin, top_db=None).T


def main(argv=None):
    """Run the three paths side by side and print their rates and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--emodb", default=os.path.join(HERE, "..", "..", "shared", "data",
                                                        "emodb"))
    parser.add_argument("--records", default=None,
                        help="EmoDB TFRecord folder (converted into a temporary folder "
                        "when not given)")
    parser.add_argument("--epochs", type=int, default=5,
                        help="timed epochs of each path (interleaved rounds)")
    args = parser.parse_args(argv)

    import librosa
    import soundfile
    import tensorflow as tf

    from keras_ser import augment, data, features as F
    from tfrecords_tools import reader, writer

    cfg = F.get_preset("eskimez")
    records = args.records
    tmp = None
    if records is None:
        tmp = tempfile.TemporaryDirectory()
        records = tmp.name
        t0 = time.perf_counter()
        writer.convert(reader.get_reader("emodb"), args.emodb, records, progress=False)
        print(f"converted EmoDB to TFRecords in {time.perf_counter() - t0:.1f} s")

    # The same clips and syllables for the librosa loop, read from the release files.
    clips = []
    for utt in reader.get_reader("emodb").scan(args.emodb):
        clips.append((utt.audio_path, np.asarray(utt.segments, np.float64)))
    n = len(clips)
    edges = F.mel_band_edges(cfg)
    bin_freqs = np.arange(cfg.num_bins) * cfg.sample_rate / cfg.fft_size

    # 1. Agreement on a fixed crop and factor.
    wave, _ = soundfile.read(clips[0][0], dtype="float32")
    width = cfg.samples_for_frames(FRAMES)
    ref = crop_and_featurise(wave, 12000, 1.07, cfg, edges, bin_freqs, width, librosa,
                             augment.vtlp_warp)
    segs = tf.constant([[12000 / cfg.sample_rate, 12000 / cfg.sample_rate]])
    crop, centre, _ = augment.word_centred_crop(tf.constant(wave), segs, width, [0, 0])
    ours = F.log_mel_spectrogram(crop[tf.newaxis], cfg, tf.constant([1.07])).numpy()[0]
    print(f"agreement on a fixed crop (centre {int(centre)}) and alpha 1.07: max |diff| "
          f"{np.abs(ours - ref).max():.4f} dB over {ours.size} values")

    # 2. tf.data from the shards (no cache: every epoch reads and decodes the records).
    ds = data.make_dataset(records, crop_frames=FRAMES, crop="word", vtlp="example",
                           batch_size=BATCH, seed=0)

    def tfdata_epoch():
        count = sum(int(batch["features"].shape[0]) for batch in ds)
        assert count == n, (count, n)

    # 3. The same ops on in-memory tensors: every utterance decoded into one padded
    # int16 matrix, then per batch: gather rows, crop, VTLP, log-mel.
    examples = list(data.read_records(records))
    lengths = tf.constant([int(e["num_samples"]) for e in examples], tf.int32)
    pcm = tf.cast(tf.round(tf.ragged.constant(
        [e["waveform"].numpy() * 32768.0 for e in examples]).to_tensor()), tf.int16)
    counts = tf.constant([int(e["segments"].shape[0]) for e in examples], tf.int32)
    starts = tf.cumsum(counts, exclusive=True)
    bounds = tf.concat([e["segments"] for e in examples], axis=0)

    @tf.function(reduce_retracing=True)
    def step(index, seed):
        rows = tf.gather(pcm, index)
        seg_index = tf.ragged.range(tf.gather(starts, index),
                                    tf.gather(starts + counts, index)).flat_values
        crops, _, _ = augment.word_centred_crops(
            rows, tf.gather(lengths, index), tf.gather(bounds, seg_index),
            tf.gather(counts, index), width, seed)
        alpha = augment.random_alpha(tf.random.experimental.stateless_fold_in(seed, 1),
                                     tf.shape(index))
        return F.log_mel_spectrogram(tf.cast(crops, tf.float32) / 32768.0, cfg, alpha)

    batches = [tf.range(i, min(i + BATCH, n)) for i in range(0, n, BATCH)]

    def memory_epoch(epoch=0):
        for k, b in enumerate(batches):
            step(b, tf.constant([epoch, k])).numpy()

    # 4. The plain librosa loop.
    rng = np.random.default_rng(0)

    def librosa_epoch():
        for path, segs_np in clips:
            out = librosa_features(soundfile.read(path, dtype="float32")[0], segs_np, rng,
                                   cfg, edges, bin_freqs)
            assert out.shape == (FRAMES, cfg.n_mels)

    # Warm-up (tracing, file cache, librosa's lazy imports), then rounds that time one
    # epoch of each path in turn, so a slow spell of the machine hits all three alike.
    tfdata_epoch()
    memory_epoch()
    librosa_epoch()
    times = {"tf.data": [], "memory": [], "librosa": []}
    for r in range(args.epochs):
        for name, run in (("tf.data", tfdata_epoch), ("memory", memory_epoch),
                          ("librosa", librosa_epoch)):
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    rate = {name: n / float(np.median(t)) for name, t in times.items()}
    ratios = [tl / tt for tt, tl in zip(times["tf.data"], times["librosa"])]

    print(f"clips: {n} EmoDB utterances, crops of {FRAMES} frames ({width} samples), "
          f"batch {BATCH}; median of {args.epochs} interleaved epochs per path")
    print(f"tf.data (records -> crop -> VTLP -> log-mel): {rate['tf.data']:8.1f} utterances/s")
    print(f"in-memory tensors, same ops:                {rate['memory']:8.1f} utterances/s")
    print(f"librosa loop (wav -> crop -> VTLP -> log-mel): {rate['librosa']:8.1f} utterances/s")
    print(f"per-round ratios tf.data/librosa: {', '.join(f'{x:.2f}' for x in ratios)}")
    print(f"tf.data reaches {100 * rate['tf.data'] / rate['memory']:.0f}% of the in-memory "
          "rate")
    print(f"ratio: {rate['tf.data'] / rate['librosa']:.2f}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(HERE, ".."))
    sys.exit(main())
