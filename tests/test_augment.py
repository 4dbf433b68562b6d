"""Word-centred crops on real alignments, epoch-wise VTLP factors, oversampling factors."""

import numpy as np
import pytest
import tensorflow as tf

from keras_ser import augment, data

SR = 16000


def _examples(records):
    return [{k: v.numpy() for k, v in ex.items() if k in ("waveform", "segments",
                                                           "utterance_id", "segment_kind")}
            for ex in data.read_records(records)]


def _check_crops(example, width, draws, edge="pad"):
    wav, segments = example["waveform"], example["segments"]
    assert len(segments) > 0
    for k in range(draws):
        crop, centre, begin = augment.word_centred_crop(
            tf.constant(wav), tf.constant(segments), width, tf.constant([k, 7]), SR, edge)
        crop, centre, begin = crop.numpy(), int(centre), int(begin)
        t = centre / SR
        assert np.any((segments[:, 0] - 1.0 / SR <= t) & (t <= segments[:, 1] + 1.0 / SR)), (
            example["utterance_id"], t)
        if edge == "pad":
            assert begin + width // 2 == centre
        else:
            assert begin <= centre < begin + width
        expected = np.zeros(width, np.float32)
        lo, hi = max(begin, 0), min(begin + width, len(wav))
        expected[lo - begin:hi - begin] = wav[lo:hi]
        assert np.array_equal(crop, expected)


@pytest.mark.real_data
@pytest.mark.slow
def test_word_centred_crops_on_emodb_are_centred_inside_a_syllable(emodb_records):
    out, _ = emodb_records
    examples = _examples(out)
    assert len(examples) == 535
    width = 128 * 256 + 256  # 128 frames of the Eskimez front end
    for example in examples[::9]:
        _check_crops(example, width, draws=5)


@pytest.mark.real_data
def test_word_centred_crops_on_textgrid_alignments_are_centred_inside_a_word(aligned_records):
    out, _ = aligned_records
    examples = _examples(out)
    assert {e["segment_kind"] for e in examples} == {b"word", b"utterance"}
    for example in examples:
        _check_crops(example, width=16000, draws=20)
        _check_crops(example, width=4000, draws=10, edge="shift")


def test_shift_mode_keeps_the_window_inside_a_long_utterance():
    wav = tf.range(32000, dtype=tf.float32)
    segments = tf.constant([[0.0, 0.05]])
    for k in range(10):
        crop, centre, begin = augment.word_centred_crop(wav, segments, 8000, [k, 1], SR, "shift")
        assert int(begin) == 0 and int(centre) <= 800
        assert np.array_equal(crop.numpy(), np.arange(8000, dtype=np.float32))


def test_short_utterance_is_zero_padded_to_the_crop_width():
    wav = tf.ones([1000])
    crop, centre, begin = augment.word_centred_crop(wav, tf.zeros([0, 2]), 4000, [3, 4], SR)
    crop = crop.numpy()
    assert crop.shape == (4000,)
    assert crop.sum() == 1000.0
    assert crop[int(-begin):int(-begin) + 1000].min() == 1.0


def test_crop_rejects_an_unknown_edge_mode():
    with pytest.raises(ValueError, match="edge"):
        augment.word_centred_crop(tf.ones([10]), tf.zeros([0, 2]), 4, [0, 0], SR, "wrap")


def test_epoch_alpha_is_one_fixed_factor_per_epoch_in_and_out_of_the_graph():
    """The factors of seed 5 are pinned: a resumed run must warp each epoch as the
    killed one did, and the factors logged by earlier runs must stay those used."""
    values = [float(augment.epoch_alpha(5, e)) for e in range(6)]
    assert values == pytest.approx([1.079114, 0.973124, 0.946789, 0.947652, 0.978554,
                                    0.934452], abs=1e-6)
    # Inside a tf.data graph, where the epoch is a tensor, the same factors.
    in_graph = tf.data.Dataset.range(6).map(lambda e: augment.epoch_alpha(5, e))
    assert [float(a) for a in in_graph] == values
    assert float(augment.epoch_alpha(6, 0)) != values[0]


def test_tta_alphas_are_eleven_factors_from_0_90_to_1_10():
    assert augment.VTLP_TTA_ALPHAS == (0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06,
                                       1.08, 1.1)


def test_oversampling_factors_balance_or_double_named_classes():
    counts = {"anger": 127, "fear": 69, "disgust": 46}
    assert augment.class_counts_factors(counts, "balance") == {"anger": 1, "fear": 2,
                                                                "disgust": 3}
    assert augment.class_counts_factors(counts, {"anger": 2}) == {"anger": 2, "fear": 1,
                                                                   "disgust": 1}
    with pytest.raises(ValueError, match="happiness"):
        augment.class_counts_factors(counts, {"happiness": 2})


def test_oversample_repeats_each_example_by_its_class_factor():
    ds = tf.data.Dataset.from_tensor_slices({"label": [0, 1, 2, 1]})
    out = [int(x["label"]) for x in augment.oversample(ds, lambda x: x["label"], {1: 3})]
    assert out == [0, 1, 1, 1, 2, 1, 1, 1]
