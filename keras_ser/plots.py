"""Pictures for monitoring training: spectrogram grids, confusion matrices, TensorBoard.

Spectrogram batches are laid out as the features are, time first: ``(n, frames, mels)``
or ``(n, frames, mels, 1)`` with values in [-1, 1] (a generator's tanh output or a
min-max normalised log-mel). Every tile is drawn the way spectrograms are read: time runs
left to right, frequency bottom to top (mel bin 0, the lowest band, on the bottom row),
and values go through matplotlib's perceptual 'magma' colormap.

Watching a fixed batch of noise vectors turn into spectrograms epoch after epoch is the
standard check on a generator: sample grids of this kind follow the practice of Radford
et al. (2016, "Unsupervised representation learning with deep convolutional generative
adversarial networks", ICLR: DCGAN), and Eskimez et al. (2020, "GAN-based data
generation for speech emotion recognition", Interspeech, Fig. 2) show generated
spectrograms beside real ones. `SpectrogramGridCallback` writes such a
grid to TensorBoard and to PNG files.

Figures are drawn with `matplotlib.figure.Figure` and the Agg canvas, never through
pyplot, so no global figure state is created or left behind. Every file is written
atomically (a temporary file in the target folder, then `os.replace`), so a reader never
sees half a PNG; parent folders are created as needed.
"""

from __future__ import annotations

import math
import os

import keras
import matplotlib
import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from keras_ser import io

#: Colour of the gaps between tiles and of empty grid cells (mid grey, neutral to 'magma').
GAP_COLOUR = (128, 128, 128)

_DPI = 100


def _spectrogram_batch(images, name: str = "images") -> np.ndarray:
    """``images`` as a float64 ``(n, frames, mels)`` array; raises on a wrong shape."""
    array = np.asarray(images)
    if array.ndim == 4:
        if array.shape[-1] != 1:
            raise ValueError(f"{name} must be (n, frames, mels) or (n, frames, mels, 1), "
                             f"got shape {array.shape} with {array.shape[-1]} channels")
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"{name} must be (n, frames, mels) or (n, frames, mels, 1), "
                         f"got rank {array.ndim} (shape {array.shape})")
    if array.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {array.shape})")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise ValueError(f"{name} has empty spectrograms (shape {array.shape})")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    return array.astype(np.float64)


def _colourise(tiles: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] (clipped; NaN -> `GAP_COLOUR`) to uint8 RGB through 'magma'."""
    clipped = np.clip(tiles, -1.0, 1.0)
    rgba = matplotlib.colormaps["magma"]((clipped + 1.0) / 2.0, bytes=True)
    rgb = rgba[..., :3].copy()
    rgb[np.isnan(tiles)] = GAP_COLOUR
    return rgb


def spectrogram_grid(images, cols: int | None = None, gap: int = 2) -> np.ndarray:
    """Tile a batch of spectrograms into one RGB image, low frequencies at the bottom.

    Tile ``i`` goes to grid row ``i // cols`` and column ``i % cols``. Inside a tile,
    time index 0 is the leftmost pixel column and mel bin 0 (the lowest band) the bottom
    pixel row, so a tile is ``mels`` pixels high and ``frames`` pixels wide. Values are
    clipped to [-1, 1] (never wrapped) and mapped through matplotlib's 'magma' colormap,
    -1 to its dark end and +1 to its bright end; NaN pixels are drawn in `GAP_COLOUR`.
    This is the sample grid of Radford et al. 2016 (DCGAN) practice, and the kind of
    grid of generated spectrograms that Eskimez et al. 2020 (Fig. 2) show.

    Args:
        images: ``(n, frames, mels)`` or ``(n, frames, mels, 1)`` array-like (NumPy
            array, tensor) with values in [-1, 1].
        cols: Tiles per grid row; ``None`` means ``ceil(sqrt(n))``. Cells left over in
            the last row are filled with `GAP_COLOUR`.
        gap: Pixels of `GAP_COLOUR` between neighbouring tiles (none around the edge).

    Returns:
        uint8 array of shape ``(rows * mels + (rows - 1) * gap,
        cols * frames + (cols - 1) * gap, 3)`` with ``rows = ceil(n / cols)``.

    Raises:
        ValueError: ``images`` is not of rank 3, or rank 4 with one channel; the batch
            or the spectrograms are empty; ``cols`` is not a positive integer or ``gap``
            a non-negative integer.
    """
    batch = _spectrogram_batch(images)
    n, frames, mels = batch.shape
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    if isinstance(cols, bool) or not isinstance(cols, (int, np.integer)) or cols < 1:
        raise ValueError(f"cols must be a positive integer or None, got {cols!r}")
    if isinstance(gap, bool) or not isinstance(gap, (int, np.integer)) or gap < 0:
        raise ValueError(f"gap must be a non-negative integer, got {gap!r}")
    cols, gap = int(cols), int(gap)
    rows = math.ceil(n / cols)
    # (n, frames, mels) -> (n, mels, frames) with mel bin 0 in the last (bottom) row.
    tiles = _colourise(np.transpose(batch, (0, 2, 1))[:, ::-1, :])
    grid = np.empty((rows * mels + (rows - 1) * gap, cols * frames + (cols - 1) * gap, 3),
                    dtype=np.uint8)
    grid[...] = GAP_COLOUR
    for i in range(n):
        top = (i // cols) * (mels + gap)
        left = (i % cols) * (frames + gap)
        grid[top:top + mels, left:left + frames] = tiles[i]
    return grid


def save_png(rgb, path) -> str:
    """Write an RGB image as a PNG file, atomically, creating parent folders.

    Args:
        rgb: uint8 array of shape ``(H, W, 3)``, e.g. from `spectrogram_grid`.
        path: Target file (str or path-like); an existing file is replaced.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: ``rgb`` is not a non-empty ``(H, W, 3)`` uint8 array.
        OSError: The file cannot be written (no partial file is left behind).
    """
    array = np.asarray(rgb)
    if array.ndim != 3 or array.shape[-1] != 3 or 0 in array.shape:
        raise ValueError(f"rgb must be a non-empty (H, W, 3) array, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8, got dtype {array.dtype}")
    image = Image.fromarray(np.ascontiguousarray(array))
    return io.atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def _save_figure(figure: Figure, path) -> str:
    """Render ``figure`` with the Agg canvas to ``path`` as PNG, atomically."""
    FigureCanvasAgg(figure)
    return io.atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=_DPI))


def _format_count(value: float) -> str:
    """A count without a decimal point when it is integral."""
    return str(int(value)) if float(value).is_integer() else f"{value:.3g}"


def confusion_matrix_png(matrix, class_names, path, title: str | None = None,
                         normalise: bool = True) -> str:
    """Draw a confusion matrix as an annotated heat map and write it as PNG.

    Rows are the true (reference) classes and columns the predicted classes, as returned
    by `keras_ser.metrics.confusion`. Each cell shows the row-normalised percentage
    (the share of that true class predicted as the column's class, so the diagonal holds
    the per-class recalls) above the count; rows without any utterance show "n/a".

    Args:
        matrix: ``(C, C)`` array-like of non-negative, finite counts.
        class_names: ``C`` class names, labelling both axes in index order.
        path: Target PNG file; written atomically, parent folders created.
        title: Figure title; ``None`` for none.
        normalise: Colour the cells by the row-normalised fraction (True, so rare
            classes stay readable) or by the raw counts (False). The annotations are the
            same either way.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: ``matrix`` is not a non-empty square 2-D array, holds negative or
            non-finite values, or the number of ``class_names`` differs from ``C``.
    """
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] == 0:
        raise ValueError(f"matrix must be a non-empty square (C, C) array, got shape "
                         f"{counts.shape}")
    if counts.dtype.kind not in "biuf":
        raise ValueError(f"matrix must be numeric, got dtype {counts.dtype}")
    counts = counts.astype(np.float64)
    if not np.isfinite(counts).all() or (counts < 0).any():
        raise ValueError("matrix must hold non-negative, finite counts")
    names = [str(name) for name in class_names]
    size = counts.shape[0]
    if len(names) != size:
        raise ValueError(f"{len(names)} class names for a {size}x{size} matrix")

    totals = counts.sum(axis=1, keepdims=True)
    fractions = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    shade = fractions if normalise else counts
    vmax = 1.0 if normalise else max(float(counts.max()), 1.0)

    side = max(4.0, 1.0 + 0.9 * size)
    figure = Figure(figsize=(side + 1.2, side), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    cmap = matplotlib.colormaps["Blues"]
    mesh = axes.imshow(shade, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest")
    colourbar = figure.colorbar(mesh, ax=axes, fraction=0.046, pad=0.04)
    colourbar.set_label("fraction of true class" if normalise else "count")
    axes.set_xticks(np.arange(size), labels=names, rotation=45, ha="right",
                    rotation_mode="anchor")
    axes.set_yticks(np.arange(size), labels=names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title:
        axes.set_title(title)
    fontsize = max(6.0, min(10.0, 60.0 / size))
    for row in range(size):
        for col in range(size):
            percent = (f"{100.0 * fractions[row, col]:.1f}%" if totals[row, 0] > 0
                       else "n/a")
            # Dark text on light cells, white text on dark ones.
            red, green, blue, _ = cmap(shade[row, col] / vmax)
            light = 0.299 * red + 0.587 * green + 0.114 * blue > 0.5
            axes.text(col, row, f"{percent}\n{_format_count(counts[row, col])}",
                      ha="center", va="center", fontsize=fontsize,
                      color="black" if light else "white")
    return _save_figure(figure, path)


def real_vs_generated_png(real, generated, path, title: str | None = None) -> str:
    """Write the grid of real spectrograms beside the grid of generated ones as PNG.

    Both batches are tiled with `spectrogram_grid` (default columns, low frequencies at
    the bottom) and drawn in one figure under the captions "real" and "generated":
    side by side, or one above the other when the grids are wider than tall. The batches
    may differ in size and spectrogram shape.

    Args:
        real: ``(n, frames, mels)`` or ``(n, frames, mels, 1)`` real spectrograms in
            [-1, 1] (e.g. min-max normalised log-mels).
        generated: Generator output of the same layout in [-1, 1].
        path: Target PNG file; written atomically, parent folders created.
        title: Figure title; ``None`` for none.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: Either batch is empty or has the wrong rank (see
            `spectrogram_grid`).
    """
    grids = [spectrogram_grid(real), spectrogram_grid(generated)]
    wide = all(grid.shape[1] > grid.shape[0] for grid in grids)
    # Enlarge small grids so that each is drawn at least ~300 pixels on its long side.
    scale = max(1.0, 300.0 / max(max(grid.shape[:2]) for grid in grids))
    heights = [grid.shape[0] * scale / _DPI for grid in grids]
    widths = [grid.shape[1] * scale / _DPI for grid in grids]
    caption = 0.4 + (0.4 if title else 0.0)
    if wide:
        figsize = (max(widths) + 0.4, sum(heights) + 2 * caption)
        layout = (2, 1)
    else:
        figsize = (sum(widths) + 0.8, max(heights) + caption)
        layout = (1, 2)
    figure = Figure(figsize=figsize, dpi=_DPI, layout="constrained")
    for index, (grid, caption_text) in enumerate(zip(grids, ("real", "generated"))):
        axes = figure.add_subplot(*layout, index + 1)
        axes.imshow(grid, interpolation="nearest")
        axes.set_title(caption_text)
        axes.set_axis_off()
    if title:
        figure.suptitle(title)
    return _save_figure(figure, path)


def conditional_grid_png(images, class_names, path, title: str | None = None) -> str:
    """Draw the same noise vectors under every emotion condition and write it as PNG.

    Row ``i`` holds what a conditional generator makes of noise vector ``i``, column
    ``j`` the condition ``class_names[j]``, so reading along a row shows what the
    emotion condition changes for a fixed latent point (Eskimez et al. 2020,
    "GAN-based data generation for speech emotion recognition", Interspeech, Fig. 3).
    Tiles are drawn as in `spectrogram_grid` (time left to right, mel bin 0 at the
    bottom, 'magma', values clipped to [-1, 1]); columns are captioned with the class
    names above the grid and rows numbered ``z1``, ``z2``, ... on the left. Every tile
    is enlarged to at least ~96 pixels on its long side, so the picture grows with the
    number of classes (columns) and of noise vectors (rows).

    Args:
        images: ``(n_noise, n_classes, frames, mels)`` or ``(n_noise, n_classes,
            frames, mels, 1)`` array-like with values in [-1, 1]; ``images[i, j]`` is
            noise vector ``i`` under condition ``j``.
        class_names: ``n_classes`` names, the column captions in index order.
        path: Target PNG file; written atomically, parent folders created.
        title: Figure title; ``None`` for none.

    Returns:
        ``path`` as a string.

    Raises:
        ValueError: ``images`` is not of rank 4, or rank 5 with one channel; an axis
            is empty; the number of ``class_names`` differs from ``n_classes``.
        TypeError: ``class_names`` is a single string.
    """
    array = np.asarray(images)
    if array.ndim == 5:
        if array.shape[-1] != 1:
            raise ValueError(f"images must be (n_noise, n_classes, frames, mels) or with a "
                             f"trailing channel of 1, got shape {array.shape} with "
                             f"{array.shape[-1]} channels")
        array = array[..., 0]
    if array.ndim != 4:
        raise ValueError(f"images must be (n_noise, n_classes, frames, mels) or (n_noise, "
                         f"n_classes, frames, mels, 1), got rank {array.ndim} (shape "
                         f"{array.shape})")
    if 0 in array.shape:
        raise ValueError(f"images has an empty axis (shape {array.shape})")
    n_noise, n_classes, frames, mels = array.shape
    if isinstance(class_names, (str, bytes)):
        raise TypeError(f"class_names must be a sequence of names, got {class_names!r}")
    names = [str(name) for name in class_names]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} class names for {n_classes} conditions (images "
                         f"shape {array.shape})")

    gap = 2
    # Row-major reshape: tile i * n_classes + j is noise i under condition j, which
    # spectrogram_grid places in grid row i, column j.
    grid = spectrogram_grid(array.reshape(n_noise * n_classes, frames, mels),
                            cols=n_classes, gap=gap)
    scale = max(1.0, 96.0 / max(frames, mels))
    width = grid.shape[1] * scale / _DPI + 0.9
    height = grid.shape[0] * scale / _DPI + 0.6 + (0.4 if title else 0.0)
    figure = Figure(figsize=(max(width, 2.5), height), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    axes.imshow(grid, interpolation="nearest")
    axes.set_xticks([j * (frames + gap) + (frames - 1) / 2.0 for j in range(n_classes)],
                    labels=names)
    axes.set_yticks([i * (mels + gap) + (mels - 1) / 2.0 for i in range(n_noise)],
                    labels=[f"z{i + 1}" for i in range(n_noise)])
    axes.xaxis.tick_top()
    axes.tick_params(length=0)
    for spine in axes.spines.values():
        spine.set_visible(False)
    if title:
        axes.set_title(title)
    return _save_figure(figure, path)


class SpectrogramGridCallback(keras.callbacks.Callback):
    """Every few epochs, draw what the generator makes of a fixed batch of noise.

    At the end of every ``every``-th epoch (epochs ``every - 1``, ``2 * every - 1``, ...
    counted from 0) the callback runs ``generator(noise, training=False)``, or
    ``generator([noise, conditions], training=False)`` for a conditional generator,
    tiles the ``(n, frames, mels, 1)`` output in [-1, 1] with `spectrogram_grid`, and
    writes the grid as a TensorBoard image summary named ``tag`` at step ``epoch``
    (0-based) and/or as ``png_dir/{tag}_epoch{epoch + 1:03d}.png``. Because the noise
    (and conditions) are fixed, the grids of successive epochs show the same latent
    points and can be compared directly, as in the sample grids of Radford et al. 2016
    (DCGAN); Eskimez et al. 2020 (Fig. 2) show generated spectrograms of this kind.

    Only `on_epoch_end` is implemented; the callback does not use ``self.model``, so the
    generator may be a sub-model of the GAN being trained.

    Args:
        generator: Callable (usually a `keras.Model`) taking ``noise`` (or
            ``[noise, conditions]``) and ``training=False``; returns ``(n, frames, mels,
            1)`` or ``(n, frames, mels)`` values in [-1, 1].
        noise: Fixed generator input, e.g. ``(n, latent_dim)``.
        log_dir: TensorBoard log folder for the image summaries; ``None`` to skip.
        png_dir: Folder for the PNG files; ``None`` to skip.
        every: Draw after every ``every``-th epoch (a positive integer).
        tag: Summary name and PNG file name prefix.
        conditions: Fixed conditioning input (e.g. one-hot classes) for a conditional
            generator, or ``None``.

    Attributes:
        last_grid: The most recent grid, uint8 ``(H, W, 3)``, or ``None`` before the
            first one.

    Raises:
        ValueError: ``every`` is not a positive integer or ``tag`` is empty.
    """

    def __init__(self, generator, noise, log_dir=None, png_dir=None, every: int = 1,
                 tag: str = "generated", conditions=None):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if not tag:
            raise ValueError("tag must be a non-empty string")
        self.generator = generator
        self.noise = noise
        self.conditions = conditions
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.png_dir = None if png_dir is None else os.fspath(png_dir)
        self.every = int(every)
        self.tag = str(tag)
        self.last_grid = None
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        """Draw, log and save the grid if ``epoch + 1`` is a multiple of ``every``.

        Args:
            epoch: 0-based index of the epoch that just ended.
            logs: Ignored.
        """
        if (epoch + 1) % self.every:
            return
        inputs = self.noise if self.conditions is None else [self.noise, self.conditions]
        output = keras.ops.convert_to_numpy(self.generator(inputs, training=False))
        grid = spectrogram_grid(output)
        self.last_grid = grid
        if self.log_dir is not None:
            if self._writer is None:
                self._writer = tf.summary.create_file_writer(self.log_dir)
            with self._writer.as_default():
                tf.summary.image(self.tag, grid[None], step=int(epoch))
            self._writer.flush()
        if self.png_dir is not None:
            save_png(grid, os.path.join(self.png_dir, f"{self.tag}_epoch{epoch + 1:03d}.png"))


def budget_study_png(points, path, title: str | None = None) -> str:
    """The SN-GAN budget study in one figure: TSTR, real + synthetic gain and Fréchet
    distance against the WGAN-GP pre-training iterations (log scale).

    Args:
        points: Dicts with ``wgan_steps`` and, per quantity (``tstr``, ``gain_f1``,
            ``fd``), ``{"mean", "std"}`` over folds (missing: not drawn).
        path: Output PNG.
        title: Figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: No point.
    """
    if not points:
        raise ValueError("budget_study_png: no point to draw")
    points = sorted(points, key=lambda p: p["wgan_steps"])
    steps = [p["wgan_steps"] for p in points]
    panels = (("tstr", "TSTR (synthetic-only / real macro-F1)", 1.0),
              ("gain_f1", "real + synthetic gain (macro-F1 points)", 100.0),
              ("fd", "Fréchet distance to real patches", 1.0))
    figure = Figure(figsize=(10.5, 3.4))
    for k, (key, label, scale) in enumerate(panels):
        axis = figure.add_subplot(1, 3, k + 1)
        have = [(s, p[key]) for s, p in zip(steps, points) if p.get(key)]
        if have:
            axis.errorbar([s for s, _ in have], [scale * v["mean"] for _, v in have],
                          yerr=[scale * v["std"] for _, v in have], marker="o", capsize=3)
        if key == "gain_f1":
            axis.axhline(0.0, color="grey", lw=0.8, ls="--")
        axis.set_xscale("log")
        axis.minorticks_off()
        axis.set_xticks(steps)
        axis.set_xticklabels([_format_count(s) for s in steps])
        axis.set_xlabel("WGAN-GP iterations")
        axis.set_title(label, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return _save_figure(figure, path)


def per_fold_png(values, folds, path, title: str | None = None, ylabel: str = "",
                 reference_rows=(), chance: float | None = None) -> str:
    """A grouped bar chart of one metric per fold: a group per fold, a bar per row.

    Args:
        values: ``{row title: [value per fold or None]}``, in the order to draw.
        folds: Fold names (the groups), as long as every value list.
        path: Output PNG.
        title: Figure title.
        ylabel: Y axis label.
        reference_rows: Row titles drawn hatched in grey tones (the baseline).
        chance: A dashed horizontal line (e.g. chance UA), or None.

    Returns:
        ``path``.

    Raises:
        ValueError: No row, or a value list whose length differs from ``folds``.
    """
    if not values:
        raise ValueError("per_fold_png: no row to draw")
    folds = [str(f) for f in folds]
    for name, row in values.items():
        if len(row) != len(folds):
            raise ValueError(f"per_fold_png: {len(row)} values for {len(folds)} folds ({name})")
    rows = list(values)
    width = 0.8 / len(rows)
    figure = Figure(figsize=(max(5.0, 1.0 + 0.35 * len(folds) * len(rows) + 0.6 * len(folds)),
                             3.6), dpi=_DPI, layout="constrained")
    axes = figure.add_subplot()
    colours = matplotlib.colormaps["tab10"]
    greys = ["0.55", "0.75", "0.4"]
    k_net = k_ref = 0
    for k, name in enumerate(rows):
        xs = [i - 0.4 + width * (k + 0.5) for i in range(len(folds))]
        ys = [np.nan if v is None else float(v) for v in values[name]]
        if name in reference_rows:
            style = {"color": greys[k_ref % len(greys)], "hatch": "//", "edgecolor": "0.3"}
            k_ref += 1
        else:
            style = {"color": colours(k_net % 10)}
            k_net += 1
        axes.bar(xs, ys, width=width * 0.95, label=name, **style)
    if chance is not None:
        axes.axhline(chance, color="0.3", lw=0.8, ls="--", label="chance")
    axes.set_xticks(np.arange(len(folds)), labels=folds,
                    rotation=30 if len(folds) > 6 else 0, ha="right" if len(folds) > 6 else "center")
    axes.set_ylabel(ylabel)
    axes.set_xlabel("test fold")
    if title:
        axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _save_figure(figure, path)


def training_curves_png(curves, path, title: str | None = None,
                        loss_label: str = "loss", metric_label: str = "validation") -> str:
    """Training curves of one model: the loss (left) and a validation metric (right)
    per epoch, a line per fold.

    Args:
        curves: ``{fold: {"loss": {name: [per epoch]}, "metric": {name: [per epoch]}}}``;
            a missing or empty panel is drawn empty with "no values".
        path: Output PNG.
        title: Figure title.
        loss_label, metric_label: Panel titles.

    Returns:
        ``path``.

    Raises:
        ValueError: No fold.
    """
    if not curves:
        raise ValueError("training_curves_png: no fold to draw")
    figure = Figure(figsize=(9.0, 3.2), dpi=_DPI, layout="constrained")
    colours = matplotlib.colormaps["tab10"]
    styles = ["-", "--", ":", "-."]
    for p, (panel, label) in enumerate((("loss", loss_label), ("metric", metric_label))):
        axes = figure.add_subplot(1, 2, p + 1)
        drawn = False
        for k, (fold, series) in enumerate(curves.items()):
            for s, (name, ys) in enumerate((series.get(panel) or {}).items()):
                if not ys:
                    continue
                axes.plot(np.arange(1, len(ys) + 1), ys, color=colours(k % 10),
                          ls=styles[s % len(styles)], marker="o" if len(ys) < 12 else None,
                          ms=3, label=f"{fold}: {name}" if len(series[panel]) > 1 else fold)
                drawn = True
        if drawn:
            axes.legend(fontsize=7, frameon=False)
        else:
            axes.text(0.5, 0.5, "no values", ha="center", va="center",
                      transform=axes.transAxes, color="0.4")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.set_xlabel("epoch")
        axes.set_title(label, fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    return _save_figure(figure, path)
