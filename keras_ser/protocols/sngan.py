"""Eskimez et al. (Interspeech 2020): pre-training, per-fold fine-tuning, synthesis, SER.

The stages of the paper's Figure 1, each trained for a fixed number of iterations by
`keras_ser.training.resumable.fit_resumable` (so each resumes from its last finished
epoch and a finished stage is not trained again):

1. `pretrain`: stage 1, the autoencoder (discriminator -> N_z code -> generator, L1);
   stage 2, WGAN-GP from the autoencoder's weights (Sec. 3.2).
2. `fine_tune`: stage 3, per fold, from a copy of the pre-trained pair with an N_c + 1
   output, centralised (all training speakers) or per client (Sec. 4.5).
3. `train_baseline`: the Chatziagapi et al. (2019) GAN the paper compares with.
4. `run_fold`: synthesis of K patches per emotion, the SER network trained on real
   patches or on one synthetic set, scored on the held-out speakers' files with the
   sliding window of the exported model (hop 32 frames, Sec. 4.3). The paper reports
   only an F1-score (Table 2); reading it as macro-F1 is our choice, and the TSTR ratio
   and Fréchet distances of SER-network embeddings are our additions. Pictures like
   the paper's Figures 2 and 3 (which are visual only) are drawn too.

Every stage's randomness is derived from the run seed and the stage's name, its
networks are initialised after ``context.reseed(stage)`` (a recipe hook setting Keras'
global seed), so a killed run resumes to the same numbers.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np

from keras_ser import data as kdata
from keras_ser import io, metrics, plots, seeds, synthesis
from keras_ser.models import bagan, sngan
from keras_ser.patches import PatchBank
from keras_ser.scoring import Scorer
from keras_ser.serving.builders import FrontEnd
from keras_ser.training import autoencoder, conditional_gan, ser, wgan_gp
from keras_ser.training import bagan as bagan_training
from keras_ser.training.resumable import fit_resumable
from tfrecords_tools import patch_records

#: Training sets of the SER network: the paper's Table 2 (real, or one synthetic set
#: alone), then each synthetic set added to the real patches as data augmentation
#: (``real+<set>``: every batch half real, half synthetic; our addition, issue 14).
SYNTHETIC = ("baseline", "centralised", "per_client")
CONDITIONS = ("real", *SYNTHETIC, *(f"real+{c}" for c in SYNTHETIC))
TITLES = {"real": "Real data", "baseline": "Synthetic, baseline (Chatziagapi et al. 2019)",
          "centralised": "Synthetic, centralised SN-GAN",
          "per_client": "Synthetic, per-client SN-GANs",
          "real+baseline": "Real + synthetic, baseline",
          "real+centralised": "Real + synthetic, centralised SN-GAN",
          "real+per_client": "Real + synthetic, per-client SN-GANs"}
#: Patches per set for the Fréchet distances (our choice).
FD_SAMPLES = 1000
#: Real patches the baseline fits its class normals on (our choice).
LATENT_SAMPLES = 4000


@dataclasses.dataclass(frozen=True)
class Budgets:
    """Iteration budgets of the stages and the synthetic set size.

    Attributes:
        ae_steps, wgan_steps: Pre-training iterations (paper: 200K each, Sec. 4.4).
        ft_steps: Fine-tuning iterations (not given; ours).
        ser_steps: SER network iterations (not given; ours).
        baseline_ae_steps, baseline_gan_steps: The baseline's stages (not given; ours).
        per_class: K, synthetic patches per emotion (paper: 40K, Sec. 4.5).
        steps_per_epoch: Iterations between checkpoints (None: a tenth of each stage).
    """

    ae_steps: int
    wgan_steps: int
    ft_steps: int
    ser_steps: int
    baseline_ae_steps: int
    baseline_gan_steps: int
    per_class: int
    steps_per_epoch: int | None = None

    def epochs(self, steps: int) -> tuple:
        """``(epochs, steps_per_epoch)`` covering ``steps`` iterations."""
        spe = self.steps_per_epoch or max(1, steps // 10)
        return max(1, -(-steps // spe)), spe

    def replace(self, **changes) -> "Budgets":
        """A copy with the fields of ``changes`` that are not None."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items()
                                            if v is not None})

    def to_dict(self) -> dict:
        """JSON-ready fields."""
        return dataclasses.asdict(self)


#: ``paper``: the paper's pre-training budgets, our other ones; ``cpu`` fits a fold into
#: minutes on 2 cores; ``smoke`` only shows the pipeline runs.
BUDGETS = {
    "paper": Budgets(ae_steps=200_000, wgan_steps=200_000, ft_steps=20_000, ser_steps=30_000,
                     baseline_ae_steps=10_000, baseline_gan_steps=20_000, per_class=40_000),
    "cpu": Budgets(ae_steps=400, wgan_steps=1000, ft_steps=500, ser_steps=800,
                   baseline_ae_steps=300, baseline_gan_steps=500, per_class=500),
    "smoke": Budgets(ae_steps=40, wgan_steps=40, ft_steps=30, ser_steps=60,
                     baseline_ae_steps=20, baseline_gan_steps=20, per_class=32),
}


@dataclasses.dataclass
class Context:
    """What the stages of one run share.

    Attributes:
        out: Run folder.
        config: `SNGANConfig`.
        classes: Emotion names in label order.
        minmax: ``(min_db, max_db)`` of the normalisation.
        budgets: `Budgets`.
        seed: Run seed.
        reseed: ``reseed(name)`` sets Keras' global seed for the networks of stage
            ``name`` (a recipe hook; library code does not touch the global seed).
        verbose: Keras ``fit`` verbosity.
    """

    out: str
    config: sngan.SNGANConfig
    classes: list
    minmax: tuple
    budgets: Budgets
    seed: int
    reseed: Callable[[str], None]
    verbose: object = "auto"

    def __post_init__(self):
        self.noise = np.random.default_rng(self.seed).standard_normal(
            (8, self.config.z_dim)).astype(np.float32)

    def folder(self, *parts) -> str:
        """A folder under the run folder (created)."""
        path = os.path.join(self.out, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def front_end(self) -> FrontEnd:
        """The SER network's served front end: the ``eskimez`` log-mel at the config's
        mel count, min-max with the run's range clipped to [-1, 1] (the range generated
        patches have), patch-wide windows every ``hop_frames`` (paper: 32), padded with
        -1 like short training utterances, mean of the window probabilities (Sec.
        4.3; the clipping and the padding are our choice)."""
        c = self.config
        return FrontEnd(features="eskimez", feature_overrides={"n_mels": c.n_mels},
                        statistics={"min": self.minmax[0], "max": self.minmax[1]},
                        clip=True, crop_frames=c.frames, hop_frames=c.hop_frames,
                        pad_value=-1.0)


def client_groups(corpus: str, speakers, stats: dict, clients: int) -> list:
    """Speaker groups of the per-client generators: the sessions (IEMOCAP, Sec. 4.5:
    "each client contained the data from a single session") or ``clients`` groups of
    consecutive sorted speakers (our rule for other corpora)."""
    if corpus == "iemocap":
        entries = stats.get("speakers") or {}
        groups = {}
        for s in speakers:
            groups.setdefault(entries.get(s, {}).get("session", s[:5]), []).append(s)
        return [sorted(v) for _, v in sorted(groups.items())]
    clients = max(1, min(clients, len(speakers)))
    return [[str(s) for s in part] for part in np.array_split(sorted(speakers), clients)]


def split(fold, corpus: str) -> tuple:
    """``(training speakers, held-out speakers)``. IEMOCAP: leave one session out (both
    speakers held out, Sec. 4.4). Other corpora: leave one speaker out, the protocol's
    validation speaker joins training (training runs a fixed budget; nothing is chosen
    on validation data)."""
    if corpus == "iemocap":
        return sorted(fold.train), sorted(fold.validation + fold.test)
    return sorted(fold.train + fold.validation), sorted(fold.test)


def _train(ctx: Context, trainer, bank: PatchBank, stage: str, steps: int, folder: str,
           seed: int, grid=None) -> dict:
    """One stage with checkpoints, TensorBoard logs and optional PNG grids."""
    c = ctx.config
    epochs, spe = ctx.budgets.epochs(steps)
    callbacks = []
    if grid is not None:
        generator, noise, conditions = grid
        callbacks.append(plots.SpectrogramGridCallback(
            generator, noise, log_dir=ctx.folder("logs", folder, "grids"),
            png_dir=ctx.folder(folder, "grids"), every=max(1, epochs // 2), tag=stage,
            conditions=conditions))

    def data(first):
        return bank.dataset(c.batch_size, c.frames, ctx.minmax, seed=seed,
                            epochs=(first, epochs), steps=spe)

    return fit_resumable(trainer, data, directory=ctx.folder(folder, "checkpoint"),
                         epochs=epochs, seed=seed, steps_per_epoch=spe, stage=stage,
                         callbacks=callbacks, verbose=ctx.verbose,
                         log_dir=ctx.folder("logs", folder), divergence_limit=1e6)


def pretrain(ctx: Context, pool: PatchBank) -> tuple:
    """Stages 1-2 on the pre-training pool (Sec. 3.2), resumably.

    Args:
        ctx: The run's `Context` (checkpoints under ``pretrain/stage1``, ``stage2``).
        pool: Log-mels of the unlabelled speech (dB).

    Returns:
        ``(generator, critic)``: generator ``[z (batch, N_z), c (batch, N_c)] ->
        (batch, frames, mels)`` in [-1, 1]; critic ``(batch, frames, mels) -> (batch, 1)``.

    Raises:
        DivergenceError: A stage's loss became NaN, infinite or larger than 1e6.
    """
    c, b = ctx.config, ctx.budgets
    ctx.reseed("pretrain")
    generator = sngan.build_generator(c)
    encoder = sngan.build_discriminator(c, "encoder")
    ae = autoencoder.AutoencoderTrainer(encoder, generator, c)
    ae.compile(**autoencoder.optimizers(c))
    print(f"\n== stage 1: autoencoder (L1), {b.ae_steps} iterations on {len(pool)} utterances")
    stage1 = _train(ctx, ae, pool, "stage1_autoencoder", b.ae_steps,
                    os.path.join("pretrain", "stage1"), seeds.derive(ctx.seed, "stage1"))
    critic = sngan.attach_head(sngan.trunk_of(encoder), c, "critic")
    gan = wgan_gp.WGANGPTrainer(generator, critic, c, seed=seeds.derive(ctx.seed, "stage2"))
    gan.compile(**wgan_gp.optimizers(c))
    print(f"\n== stage 2: WGAN-GP, {b.wgan_steps} iterations")
    zeros = np.zeros((len(ctx.noise), c.n_classes), np.float32)
    stage2 = _train(ctx, gan, pool, "stage2_wgan_gp", b.wgan_steps,
                    os.path.join("pretrain", "stage2"), seeds.derive(ctx.seed, "stage2"),
                    grid=(generator, ctx.noise, zeros))
    io.write_json(os.path.join(ctx.out, "pretrain", "history.json"),
                  {"stage1": stage1["history"], "stage2": stage2["history"]})
    io.save_model(generator, os.path.join(ctx.out, "pretrain", "generator.keras"))
    return generator, critic


def fine_tune(ctx: Context, pretrained: tuple, bank: PatchBank, folder: str, stage: str):
    """Stage 3 (Sec. 3.2) from a copy of the pre-trained GAN, on ``bank``'s emotions.

    Args:
        ctx: The run's `Context`.
        pretrained: `pretrain`'s ``(generator, critic)`` (copied, not changed).
        bank: The labelled patches of the speakers this generator models.
        folder: Its folder under the run folder.
        stage: Stage name (seeds, messages).

    Returns:
        The fine-tuned conditional generator (also saved as ``generator.keras``).

    Raises:
        DivergenceError: The loss diverged.
    """
    c = ctx.config
    ctx.reseed(stage)
    generator = sngan.build_generator(c)
    generator.set_weights(pretrained[0].get_weights())
    critic = sngan.build_discriminator(c, "critic")
    critic.set_weights(pretrained[1].get_weights())
    disc = sngan.attach_head(sngan.trunk_of(critic), c, "fake_class")
    seed = seeds.derive(ctx.seed, stage)
    trainer = conditional_gan.ConditionalGANTrainer(generator, disc, c, seed=seed)
    trainer.compile(**conditional_gan.optimizers(c))
    conditions = sngan.condition_vectors(np.arange(len(ctx.noise)) % c.n_classes, c.n_classes)
    _train(ctx, trainer, bank, stage, ctx.budgets.ft_steps, folder, seed,
           grid=(generator, ctx.noise, conditions))
    io.save_model(generator, os.path.join(ctx.out, folder, "generator.keras"))
    return generator


def train_baseline(ctx: Context, bank: PatchBank, folder: str, stage: str):
    """The Chatziagapi et al. 2019 baseline on the fold's emotion data.

    Autoencoder, one normal per class fitted on `LATENT_SAMPLES` real patches' codes
    (``latents.npz``, reused on resume), then the N_c + 1 GAN.

    Returns:
        ``sample_fn(labels (n,), seed) -> (n, frames, mels)`` patches in [-1, 1].

    Raises:
        DivergenceError: A loss diverged.
        ValueError: A class with fewer than 2 patches (`ClassLatents.fit`).
    """
    c, b = ctx.config, ctx.budgets
    bc = bagan.preset_for(c)
    seed = seeds.derive(ctx.seed, stage)
    ctx.reseed(stage)
    generator = bagan.build_baseline_generator(bc)
    encoder = bagan.build_baseline_encoder(bc)
    ae = bagan_training.BaselineAutoencoderTrainer(encoder, generator, bc)
    ae.compile(**bagan_training.autoencoder_optimizers(bc))
    _train(ctx, ae, bank, f"{stage}_autoencoder", b.baseline_ae_steps,
           os.path.join(folder, "autoencoder"), seed)
    latents_path = os.path.join(ctx.folder(folder), "latents.npz")
    if os.path.isfile(latents_path):
        latents = bagan.ClassLatents.load(latents_path)
    else:
        patches, labels = bank.sample(LATENT_SAMPLES, c.frames, ctx.minmax, seed=seed,
                                      labels=True)
        latents = bagan_training.fit_class_latents(encoder, patches, labels, bc)
        latents.save(latents_path)
    ctx.reseed(f"{stage}_gan")
    disc = bagan.build_baseline_discriminator(encoder, bc)
    gan = bagan_training.BaselineGANTrainer(generator, disc, latents, bc,
                                            seed=seeds.derive(seed, "gan"))
    gan.compile(**bagan_training.gan_optimizers(bc))
    _train(ctx, gan, bank, f"{stage}_gan", b.baseline_gan_steps, os.path.join(folder, "gan"),
           seeds.derive(seed, "gan"))
    io.save_model(generator, os.path.join(ctx.out, folder, "generator.keras"))
    return synthesis.baseline_sampler(generator, latents)


def train_ser(ctx: Context, data, folder: str, stage: str):
    """The SER network (Sec. 4.3) trained, resumably, for ``ctx.budgets.ser_steps``.

    Args:
        ctx: The run's `Context`.
        data: ``data((first, stop), steps_per_epoch)`` -> batches ``{"features": (batch,
            frames, mels), "label": (batch,)}`` of those epochs.
        folder: Its folder under the run folder.
        stage: Stage name (seeds, messages).

    Returns:
        The trained network, ``(batch, frames, mels) -> (batch, N_c)`` probabilities.
    """
    ctx.reseed(stage)
    model = ser.build_ser_network(ctx.config)
    epochs, spe = ctx.budgets.epochs(ctx.budgets.ser_steps)
    fit_resumable(model, lambda first: ser.as_pairs(data((first, epochs), spe)),
                  directory=ctx.folder(folder, "checkpoint"), epochs=epochs,
                  seed=seeds.derive(ctx.seed, stage), steps_per_epoch=spe, stage=stage,
                  verbose=ctx.verbose, log_dir=ctx.folder("logs", folder))
    return model


def mixed_batches(real, synthetic):
    """Batches half real, half synthetic: the two streams zipped and concatenated.

    Args:
        real, synthetic: Datasets of ``{"features": (b, frames, mels), "label": (b,)}``
            (each with half the batch size).

    Returns:
        A dataset of ``{"features": (2b, frames, mels), "label": (2b,)}`` (labels int32).
    """
    import tensorflow as tf

    def join(a, b):
        return {"features": tf.concat([tf.cast(a["features"], tf.float32),
                                       tf.cast(b["features"], tf.float32)], 0),
                "label": tf.concat([tf.cast(a["label"], tf.int32),
                                    tf.cast(b["label"], tf.int32)], 0)}

    return tf.data.Dataset.zip((real, synthetic)).map(join)


def _write_set(ctx, folder, sampler, per_class, seed, source, metadata):
    c = ctx.config
    return patch_records.write_synthetic_records(
        ctx.folder(folder), sampler, ctx.classes, per_class, frames=c.frames,
        n_mels=c.n_mels, seed=seed, source=source, metadata=metadata, progress=False)


def run_fold(ctx: Context, fold_name: str, train_speakers, held_out, bank: PatchBank,
             utterances: kdata.Utterances, pretrained: tuple, clients: list,
             baseline: bool = True) -> dict:
    """Stage 3, synthesis and the SER networks of one fold; returns its result.

    Args:
        ctx: The run's `Context`.
        fold_name: Fold name (folder ``folds/<name>``).
        train_speakers, held_out: `split` of the fold.
        bank: The labelled corpus's log-mels (`PatchBank`).
        utterances: The same corpus's waveforms, for scoring.
        pretrained: `pretrain`'s (generator, critic).
        clients: Speaker groups (`client_groups`).
        baseline: Train the baseline GAN too.

    Returns:
        Dict: ``fold``, speakers, ``clients``, ``scores`` (per training set:
        `keras_ser.metrics.classification_report` and ``tstr``, the synthetic-only
        macro-F1 over the real-data one, our addition), ``frechet`` (our addition).
    """
    c, b = ctx.config, ctx.budgets
    fdir = os.path.join("folds", fold_name)
    train = bank.subset(train_speakers)
    seed = seeds.derive(ctx.seed, fold_name)
    print(f"\n== fold {fold_name}: train {len(train)} files ({len(train_speakers)} "
          f"speakers), test {', '.join(held_out)}")
    samplers, sets = {}, {}
    central = fine_tune(ctx, pretrained, train, os.path.join(fdir, "centralised"),
                        f"{fold_name}_centralised")
    samplers["centralised"] = synthesis.conditional_sampler(central)
    client_gens = []
    for k, group in enumerate(clients, 1):
        members = [s for s in group if s in train_speakers]
        if members:
            gen = fine_tune(ctx, pretrained, train.subset(members),
                            os.path.join(fdir, f"client{k}"), f"{fold_name}_client{k}")
            client_gens.append((k, members, gen))
    if baseline:
        samplers["baseline"] = train_baseline(ctx, train, os.path.join(fdir, "baseline"),
                                              f"{fold_name}_baseline")
    for cond in ("centralised", "baseline"):
        if cond in samplers:
            folder = os.path.join(fdir, "synthetic", cond)
            _write_set(ctx, folder, samplers[cond], b.per_class, seed, f"{cond}-{fold_name}",
                       {"fold": fold_name, "minmax": list(ctx.minmax)})
            sets[cond] = [os.path.join(ctx.out, folder)]
    per_client = max(1, b.per_class // max(1, len(client_gens)))
    if client_gens:
        sets["per_client"] = []
    for k, members, gen in client_gens:
        folder = os.path.join(fdir, "synthetic", f"client{k}")
        _write_set(ctx, folder, synthesis.conditional_sampler(gen), per_client, seed + k,
                   f"client{k}-{fold_name}", {"fold": fold_name, "speakers": members})
        sets["per_client"].append(os.path.join(ctx.out, folder))

    held = utterances.indices(held_out)
    test_labels = utterances.labels[held]
    test_units = None
    scores, models, probabilities = {}, {}, {}
    for cond in CONDITIONS:
        stage_seed = seeds.derive(seed, "ser", cond)
        if cond == "real":
            def data(span, spe, s=stage_seed):
                return train.dataset(c.batch_size, c.frames, ctx.minmax, seed=s, epochs=span,
                                     steps=spe)
        elif cond.startswith("real+") and cond[5:] in sets:
            half = c.batch_size // 2

            def data(span, spe, s=stage_seed, folders=sets[cond[5:]], half=half):
                return mixed_batches(
                    train.dataset(half, c.frames, ctx.minmax, seed=s, epochs=span, steps=spe),
                    kdata.synthetic_dataset(folders, batch_size=c.batch_size - half,
                                            seed=seeds.derive(s, "synthetic"),
                                            drop_remainder=True, epochs=span, steps=spe))
        elif cond in sets:
            def data(span, spe, s=stage_seed, folders=sets[cond]):
                return kdata.synthetic_dataset(folders, batch_size=c.batch_size, seed=s,
                                               drop_remainder=True, epochs=span, steps=spe)
        else:
            continue
        print(f"-- SER network on {cond}")
        models[cond] = train_ser(ctx, data, os.path.join(fdir, f"ser_{cond}"),
                                 f"{fold_name}_ser_{cond}")
        scorer = Scorer(models[cond], ctx.front_end())
        # The windows depend on the front end only: cut the held-out files once.
        test_units = test_units or scorer.prepare(utterances.select(held))
        result = scorer(test_units)
        probabilities[cond] = result.probabilities
        scores[cond] = metrics.classification_report(test_labels, result.predicted,
                                                     ctx.classes)
        scores[cond].pop("class_names")
        print(f"   macro-F1 {scores[cond]['macro_f1']:.3f}  UA {scores[cond]['ua']:.3f}")
    real_f1 = scores["real"]["macro_f1"]
    for cond, s in scores.items():
        s["tstr"] = (s["macro_f1"] / real_f1 if cond in SYNTHETIC and real_f1 > 0 else None)
        s["gain_f1"] = (s["macro_f1"] - real_f1 if cond.startswith("real+") else None)
    io.save_npz(os.path.join(ctx.out, fdir, "predictions.npz"),
                utterance_id=np.array([utterances.ids[i] for i in held]), **probabilities)

    embed_model = sngan.trunk_of(models["real"])
    real_patches = train.sample(FD_SAMPLES, c.frames, ctx.minmax, seed=seed)
    real_emb = synthesis.embed(embed_model, real_patches)
    balanced = np.arange(FD_SAMPLES) % c.n_classes
    generated = {
        "pretrained": synthesis.generate(pretrained[0], -np.ones(FD_SAMPLES, int), seed=seed),
        "centralised": synthesis.generate(central, balanced, seed=seed),
        "real_test": bank.subset(held_out).sample(FD_SAMPLES, c.frames, ctx.minmax, seed=seed),
    }
    if client_gens:
        generated["per_client"] = np.concatenate([
            synthesis.generate(g, balanced[i::len(client_gens)], seed=seed + i)
            for i, (_, _, g) in enumerate(client_gens)])
    if "baseline" in samplers:
        generated["baseline"] = samplers["baseline"](balanced, seed)
    fd = {key: metrics.frechet_distance(real_emb, synthesis.embed(embed_model, x))
          for key, x in generated.items()}
    print("   Fréchet distance to real training patches: " +
          ", ".join(f"{k} {v:.2f}" for k, v in fd.items()))

    plots.real_vs_generated_png(real_patches[:16], generated["centralised"][:16],
                                os.path.join(ctx.out, fdir, "real_vs_generated.png"),
                                title=f"fold {fold_name}: real vs centralised SN-GAN")
    z = np.repeat(ctx.noise[:4], c.n_classes, axis=0)
    cond = np.tile(np.eye(c.n_classes, dtype=np.float32), (4, 1))
    grid = np.asarray(central([z, cond], training=False)).reshape(
        4, c.n_classes, c.frames, c.n_mels)
    plots.conditional_grid_png(grid, ctx.classes,
                               os.path.join(ctx.out, fdir, "same_noise_per_emotion.png"),
                               title=f"fold {fold_name}: one noise vector per row")
    io.save_model(models["real"], os.path.join(ctx.out, fdir, "ser_real", "classifier.keras"))
    return {"fold": fold_name, "train_speakers": list(train_speakers),
            "test_speakers": list(held_out),
            "clients": [{"client": k, "speakers": m} for k, m, _ in client_gens],
            "scores": scores, "frechet": fd}
