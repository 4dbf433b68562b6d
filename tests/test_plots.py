"""Tests of keras_ser.plots: spectrogram grids, PNG files, confusion matrices, callback."""

import glob
import io
import os

import keras
import matplotlib
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from keras_ser import plots

FRAMES, MELS = 16, 8


def _magma(value):
    """The uint8 RGB colour that 'magma' gives a value in [-1, 1]."""
    return np.array(matplotlib.colormaps["magma"]((value + 1.0) / 2.0, bytes=True)[:3])


def _png_files(folder):
    return sorted(os.listdir(folder))


# --- spectrogram_grid -------------------------------------------------------------------


def test_grid_shape_with_explicit_cols_and_gap():
    images = np.zeros((5, FRAMES, MELS), np.float32)
    grid = plots.spectrogram_grid(images, cols=3, gap=2)
    # 2 rows of 8-pixel-high tiles with one 2-pixel gap; 3 columns of 16-pixel-wide tiles
    # with two gaps.
    assert grid.shape == (2 * MELS + 2, 3 * FRAMES + 2 * 2, 3)
    assert grid.dtype == np.uint8


def test_grid_default_cols_is_ceil_sqrt_and_accepts_channel_axis():
    images = np.zeros((5, FRAMES, MELS, 1), np.float32)
    grid = plots.spectrogram_grid(images, gap=1)  # ceil(sqrt(5)) = 3 columns, 2 rows
    assert grid.shape == (2 * MELS + 1, 3 * FRAMES + 2, 3)
    grid = plots.spectrogram_grid(np.zeros((9, FRAMES, MELS)), gap=0)
    assert grid.shape == (3 * MELS, 3 * FRAMES, 3)


def test_lowest_mel_bin_is_the_bottom_row_of_the_tile():
    image = -np.ones((1, FRAMES, MELS), np.float32)
    image[0, :, 0] = 1.0  # mel bin 0 (lowest frequency) bright at every frame
    grid = plots.spectrogram_grid(image, gap=0)
    assert grid.shape == (MELS, FRAMES, 3)
    bright, dark = _magma(1.0), _magma(-1.0)
    assert (grid[-1] == bright).all(), "mel bin 0 must be drawn on the bottom row"
    assert (grid[:-1] == dark).all(), "the other bins must stay dark (top row included)"
    assert not (grid[0] == bright).all()


def test_time_index_zero_is_the_leftmost_column():
    image = -np.ones((1, FRAMES, MELS), np.float32)
    image[0, 0, :] = 1.0  # first frame bright in every mel bin
    grid = plots.spectrogram_grid(image, gap=0)
    assert (grid[:, 0] == _magma(1.0)).all()
    assert (grid[:, 1:] == _magma(-1.0)).all()


def test_tiles_are_placed_row_major_and_separated_by_neutral_gaps():
    images = -np.ones((5, FRAMES, MELS), np.float32)
    images[4] = 1.0  # fifth tile: row 1, column 1
    grid = plots.spectrogram_grid(images, cols=3, gap=2)
    top, left = MELS + 2, FRAMES + 2
    assert (grid[top:top + MELS, left:left + FRAMES] == _magma(1.0)).all()
    assert (grid[:MELS, :FRAMES] == _magma(-1.0)).all()
    gap = np.array(plots.GAP_COLOUR, np.uint8)
    assert (grid[MELS:MELS + 2] == gap).all()              # horizontal gap
    assert (grid[:, FRAMES:FRAMES + 2] == gap).all()        # vertical gap
    assert (grid[top:, 2 * left:] == gap).all()             # empty sixth cell


def test_values_outside_range_are_clipped_not_wrapped():
    values = np.array([-7.0, -1.5, -1.0, 0.0, 0.5, 1.0, 1.2, 3.0])
    images = np.broadcast_to(values[None, :, None], (1, values.size, 4)).copy()
    grid = plots.spectrogram_grid(images, gap=0)
    expected = plots.spectrogram_grid(np.clip(images, -1.0, 1.0), gap=0)
    np.testing.assert_array_equal(grid, expected)
    assert (grid[:, 0] == _magma(-1.0)).all() and (grid[:, -1] == _magma(1.0)).all()
    # Brightness rises monotonically with the value: nothing wrapped around.
    brightness = grid[0].astype(int).sum(axis=-1)
    assert (np.diff(brightness) >= 0).all()
    assert brightness[-1] > brightness[3] > brightness[0]


def test_nan_pixels_are_drawn_in_the_gap_colour():
    images = np.zeros((1, FRAMES, MELS))
    images[0, 3, 2] = np.nan
    grid = plots.spectrogram_grid(images, gap=0)
    assert (grid[MELS - 1 - 2, 3] == plots.GAP_COLOUR).all()


@pytest.mark.parametrize("shape", [(FRAMES, MELS), (2, FRAMES, MELS, 3), (1, 2, FRAMES, MELS, 1),
                                   (0, FRAMES, MELS), (0, FRAMES, MELS, 1)])
def test_wrong_rank_or_empty_batch_raises(shape):
    with pytest.raises(ValueError):
        plots.spectrogram_grid(np.zeros(shape))


@pytest.mark.parametrize("kwargs", [{"cols": 0}, {"cols": 1.5}, {"gap": -1}])
def test_bad_cols_or_gap_raises(kwargs):
    with pytest.raises(ValueError):
        plots.spectrogram_grid(np.zeros((2, FRAMES, MELS)), **kwargs)


# --- save_png ---------------------------------------------------------------------------


def test_save_png_round_trip_creates_folders_and_leaves_no_temp_file(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(18, 52, 3), dtype=np.uint8)
    path = tmp_path / "a" / "b" / "grid.png"
    assert plots.save_png(rgb, path) == str(path)
    back = matplotlib.image.imread(str(path))
    assert back.shape[:2] == (18, 52)
    np.testing.assert_array_equal(np.round(back[..., :3] * 255).astype(np.uint8), rgb)
    # Overwrite in place: still exactly one file in the folder.
    plots.save_png(np.zeros((4, 5, 3), np.uint8), path)
    assert matplotlib.image.imread(str(path)).shape[:2] == (4, 5)
    assert _png_files(path.parent) == ["grid.png"]


@pytest.mark.parametrize("array", [np.zeros((4, 5), np.uint8), np.zeros((4, 5, 4), np.uint8),
                                   np.zeros((4, 5, 3), np.float32)])
def test_save_png_rejects_non_rgb_uint8(tmp_path, array):
    with pytest.raises(ValueError):
        plots.save_png(array, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- confusion_matrix_png ---------------------------------------------------------------


def test_confusion_matrix_png_writes_a_png_without_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    matrix = np.array([[8, 1, 1], [2, 5, 3], [0, 0, 0]])  # last row: class never seen
    path = tmp_path / "figs" / "confusion.png"
    out = plots.confusion_matrix_png(matrix, ["angry", "happy", "neutral"], path,
                                     title="fold 1")
    assert out == str(path)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(io.BytesIO(data))
    # 3 classes: a side of max(4, 1 + 0.9 * 3) = 4 inches, 1.2 more for the colour bar,
    # at 100 dpi.
    assert image.shape == (400, 520, 4)
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert plt.get_fignums() == before
    assert _png_files(path.parent) == ["confusion.png"]
    raw = plots.confusion_matrix_png(matrix, ["a", "b", "c"], tmp_path / "raw.png",
                                     normalise=False)
    assert matplotlib.image.imread(raw).shape == (400, 520, 4)


@pytest.mark.parametrize("matrix, names", [
    (np.ones((2, 3)), ["a", "b"]),
    (np.ones((3,)), ["a", "b", "c"]),
    (np.ones((2, 2)), ["a", "b", "c"]),
    (np.array([[1, -1], [0, 2]]), ["a", "b"]),
    (np.array([[1, np.nan], [0, 2]]), ["a", "b"]),
])
def test_confusion_matrix_png_rejects_bad_input(tmp_path, matrix, names):
    with pytest.raises(ValueError):
        plots.confusion_matrix_png(matrix, names, tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


# --- real_vs_generated_png --------------------------------------------------------------


def test_real_vs_generated_png(tmp_path):
    rng = np.random.default_rng(1)
    real = rng.uniform(-1, 1, size=(4, FRAMES, MELS))
    generated = rng.uniform(-1, 1, size=(6, FRAMES, MELS, 1))
    path = plots.real_vs_generated_png(real, generated, tmp_path / "cmp.png", title="epoch 3")
    image = matplotlib.image.imread(path)
    # Grids of 18 x 34 and 18 x 52 pixels (2-pixel gaps), wider than tall: one above the
    # other, scaled by 300 / 52; 100 dpi; captions of 0.8 inch each (title) and 0.4
    # inch of margin: 2 * 18 * 300 / 52 + 160 = 367.7 rows, 300 + 40 columns.
    assert image.shape == (367, 340, 4)
    with pytest.raises(ValueError):
        plots.real_vs_generated_png(real, np.zeros((0, FRAMES, MELS)), tmp_path / "bad.png")


# --- SpectrogramGridCallback ------------------------------------------------------------


def _tiny_generator(latent=4, classes=None):
    noise = keras.Input((latent,))
    inputs = noise
    hidden = noise
    if classes:
        condition = keras.Input((classes,))
        inputs = [noise, condition]
        hidden = keras.layers.Concatenate()([noise, condition])
    hidden = keras.layers.Dense(FRAMES * MELS)(hidden)
    hidden = keras.layers.Reshape((FRAMES, MELS, 1))(hidden)
    output = keras.layers.Activation("tanh")(hidden)
    return keras.Model(inputs, output)


def _image_summaries(log_dir, tag):
    """(step, decoded PNG) of every image summary named ``tag`` in ``log_dir``."""
    found = []
    for event_file in glob.glob(os.path.join(str(log_dir), "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                if value.tag != tag:
                    continue
                assert value.metadata.plugin_data.plugin_name == "images"
                width, height, png = tf.make_ndarray(value.tensor)
                image = tf.io.decode_png(png).numpy()
                assert image.shape[:2] == (int(height), int(width))
                found.append((event.step, image))
    return found


def test_callback_writes_png_and_tensorboard_image(tmp_path):
    keras.utils.set_random_seed(0)
    generator = _tiny_generator()
    noise = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    log_dir, png_dir = tmp_path / "tb", tmp_path / "png"
    callback = plots.SpectrogramGridCallback(generator, noise, log_dir=log_dir,
                                             png_dir=png_dir, tag="fake")
    callback.on_epoch_end(0)

    expected_shape = (2 * MELS + 2, 3 * FRAMES + 2 * 2)  # 5 tiles -> 3 columns, 2 rows
    png = png_dir / "fake_epoch001.png"
    assert png.exists()
    assert matplotlib.image.imread(str(png)).shape[:2] == expected_shape
    grid = plots.spectrogram_grid(generator(noise, training=False))
    np.testing.assert_array_equal(callback.last_grid, grid)

    summaries = _image_summaries(log_dir, "fake")
    assert len(summaries) == 1
    step, image = summaries[0]
    assert step == 0
    np.testing.assert_array_equal(image, grid)


def test_callback_every_and_conditions(tmp_path):
    keras.utils.set_random_seed(0)
    generator = _tiny_generator(latent=3, classes=2)
    noise = np.zeros((4, 3), np.float32)
    conditions = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    callback = plots.SpectrogramGridCallback(generator, noise, png_dir=tmp_path, every=2,
                                             conditions=conditions)
    callback.on_epoch_end(0)
    assert _png_files(tmp_path) == [] and callback.last_grid is None
    callback.on_epoch_end(1)
    assert _png_files(tmp_path) == ["generated_epoch002.png"]
    assert callback.last_grid.shape == (2 * MELS + 2, 2 * FRAMES + 2, 3)
    # With zero noise only the condition differs: tiles 0 and 2 match, 0 and 1 do not.
    grid = callback.last_grid
    np.testing.assert_array_equal(grid[:MELS, :FRAMES], grid[MELS + 2:, :FRAMES])
    assert (grid[:MELS, :FRAMES] != grid[:MELS, FRAMES + 2:]).any()
    expected = plots.spectrogram_grid(generator([noise, conditions], training=False))
    np.testing.assert_array_equal(callback.last_grid, expected)


def test_callback_rejects_bad_every():
    with pytest.raises(ValueError):
        plots.SpectrogramGridCallback(lambda x, training: x, np.zeros((1, 2)), every=0)
