"""Eskimez et al. (Interspeech 2020): pre-training, per-fold fine-tuning, synthesis, SER.

The stages of the paper's Figure 1, each trained for a fixed number of iterations by
`keras_ser.training.resumable.fit_resumable` (so each resumes from its last finished
epoch and a finished stage is not trained again):

1. `pretrain`: stage 1, the autoencoder (discriminator -> N_z code -> generator, L1);
   stage 2, WGAN-GP from the autoencoder's weights (Sec. 3.2).
2. `fine_tune`: stage 3, per fold, from a copy of the pre-trained pair with an N_c + 1
   output, centralised (all training speakers) or per client (Sec. 4.5). `run_clients`
   fine-tunes the clients of a fold and writes each one's synthetic set, or reuses the
   sets a client job (`run_client_jobs`, the recipe's ``--client k``) finished earlier,
   in this folder or on another machine (see "Client folders" below).
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

Client folders. A client is one speaker group of `client_groups`, numbered from 1 in
each fold. Everything client k of a fold produces lives in two folders of the run
folder, which can be copied from the machine that ran it into the pooling run's folder:

- ``folds/<fold>/client<k>/``: ``checkpoint/`` (stage 3), ``grids/``, the fine-tuned
  ``generator.keras`` and, written last, `CLIENT_RECORD` (``client.json``): the settings
  the set was made with and the SHA-256 of the pre-trained weights it started from;
- ``folds/<fold>/synthetic/client<k>/``: its synthetic TFRecords (``synthetic.json``).

(TensorBoard curves go to ``logs/folds/<fold>/client<k>/``; nothing reads them back.) A
run finding ``client.json`` reuses the client after checking that those settings and the
pre-trained weights are its own (`ClientSet`); without it the client is fine-tuned there,
resuming its checkpoint if any. The pre-trained pair is shared by every client (the paper
sends one pre-trained copy to each client, Sec. 4.5): ``pretrain/`` copied into another
machine's run folder is restored, not retrained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable

import keras
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
#: The record that marks a client's fine-tuning and synthetic set as finished.
CLIENT_RECORD = "client.json"


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

    def replace(self, **changes) -> Budgets:
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


def pretrained_sha256(pretrained: tuple) -> str:
    """SHA-256 (hex) of the pre-trained ``(generator, critic)`` weights: equal exactly
    when every client starts from the same copy, however it reached the machine."""
    digest = hashlib.sha256()
    for model in pretrained:
        for w in model.get_weights():
            digest.update(str(w.shape).encode())
            digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


def choose_clients(requested, groups: dict) -> list:
    """The client numbers of ``--client`` (repeatable; each value one number or a
    comma-separated list), checked against every selected fold.

    Args:
        requested: The option's values, e.g. ``["2"]`` or ``["1,3", "4"]``.
        groups: ``{fold name: client_groups(...)}``.

    Returns:
        Sorted distinct numbers (1-based, as in the folder names ``client<k>``).

    Raises:
        keras_ser.experiment.BadInput: Not a number, or out of range in a fold (the
            message lists that fold's clients and their speakers).
    """
    from keras_ser.experiment import BadInput

    try:
        chosen = sorted({int(v) for item in requested for v in str(item).split(",")
                         if v.strip()})
    except ValueError:
        raise BadInput(f"--client takes client numbers such as 2 or 1,3; got "
                       f"{', '.join(map(str, requested))}") from None
    if not chosen:
        raise BadInput("--client: no client number given")
    for fold, clients in groups.items():
        bad = [k for k in chosen if not 1 <= k <= len(clients)]
        if bad:
            listed = "; ".join(f"{k} = {', '.join(g)}" for k, g in enumerate(clients, 1))
            raise BadInput(
                f"--client {','.join(map(str, bad))} is out of range: fold {fold} has clients "
                f"1..{len(clients)} ({listed}); a client is a group of training speakers "
                "(--clients sets how many; IEMOCAP: one per training session)")
    return chosen


@dataclasses.dataclass
class ClientSet:
    """One client's fine-tuned generator and synthetic set (see "Client folders").

    Attributes:
        k: Client number in its fold (1-based).
        speakers: Its training speakers.
        generator: The fine-tuned generator, ``[z (n, N_z), c (n, N_c)] -> (n, frames,
            mels)``.
        synthetic: Its synthetic TFRecord folder (under the run folder).
        reused: True when a finished client was found and nothing was trained or written.
    """

    k: int
    speakers: list
    generator: object
    synthetic: str
    reused: bool


def _client_record(ctx: Context, fold_name: str, k: int, members, per_client: int,
                   seed: int, sha: str) -> dict:
    """What a client's set depends on: compared on reuse (JSON round-tripped)."""
    _, spe = ctx.budgets.epochs(ctx.budgets.ft_steps)
    return _as_json({
        "fold": fold_name, "client": k, "speakers": list(members), "classes": list(ctx.classes),
        "run_seed": ctx.seed, "synthesis_seed": seed, "per_class": per_client,
        "ft_steps": ctx.budgets.ft_steps, "steps_per_epoch": spe,
        "minmax_db": [float(v) for v in ctx.minmax], "architecture": ctx.config.to_dict(),
        "pretrained_sha256": sha,
        "synthetic": "/".join(("folds", fold_name, "synthetic", f"client{k}"))})


def _as_json(document: dict) -> dict:
    """``document`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(document))


def _reuse_client(ctx: Context, folder: str, record: dict) -> ClientSet | None:
    """The finished client of ``folder`` (relative), or None when it has no record.

    Raises:
        keras_ser.experiment.BadInput: The record's settings or pre-trained weights are
            not this run's, or a file it promises is missing.
    """
    from keras_ser.experiment import BadInput

    path = os.path.join(ctx.out, folder, CLIENT_RECORD)
    if not os.path.isfile(path):
        return None
    stored = io.read_json(path)
    k, fold = record["client"], record["fold"]
    redo = (f"remove {os.path.join(ctx.out, folder)} and "
            f"{os.path.join(ctx.out, *record['synthetic'].split('/'))} and run client {k} "
            f"again with this run's options, from a copy of {os.path.join(ctx.out, 'pretrain')}")

    def short(value):
        return value[:12] + "..." if isinstance(value, str) and len(value) == 64 else value

    differ = [key for key in record if stored.get(key) != record[key]]
    if differ:
        shown = "; ".join(f"{key}: {short(stored.get(key))!r} there, {short(record[key])!r} "
                          "here" for key in differ if key != "architecture") or "architecture"
        raise BadInput(f"client {k} of fold {fold} in {path} was made with other settings "
                       f"or pre-trained weights than this run's ({shown}); {redo}")
    synthetic = os.path.join(ctx.out, *record["synthetic"].split("/"))
    generator_path = os.path.join(ctx.out, folder, "generator.keras")
    for needed in (generator_path, os.path.join(synthetic, "synthetic.json")):
        if not os.path.isfile(needed):
            raise BadInput(f"client {k} of fold {fold}: {path} is there but {needed} is "
                           f"missing (copy both client folders whole, or {redo})")
    print(f"client {k} of fold {fold} ({', '.join(record['speakers'])}): finished "
          f"earlier; reusing {folder} and {record['synthetic']}")
    return ClientSet(k, record["speakers"], keras.models.load_model(generator_path),
                     synthetic, reused=True)


def run_clients(ctx: Context, fold_name: str, train_speakers, bank: PatchBank,
                pretrained: tuple, clients: list, only=None) -> list:
    """Stage 3 per client and each client's synthetic set (Sec. 4.5), resumably.

    Client k (the k-th group of ``clients`` with a training speaker, from 1) is
    fine-tuned from a copy of the pre-trained pair on its speakers' patches, then draws
    ``K // n`` patches per emotion (n clients; the paper: 10K each from 4 clients,
    40K per emotion pooled) with seed ``derive(run seed, fold) + k``. A client with a
    finished record is reused (`ClientSet.reused`), after checking it was made with this
    run's settings and pre-trained weights; others are trained here, resuming their
    checkpoint, and get their record last (so a pooling run computes a client no
    ``--client`` job finished: our choice, it keeps one uninterrupted run possible).

    Args:
        ctx: The run's `Context`.
        fold_name: Fold name (folders ``folds/<fold>/client<k>``).
        train_speakers: The fold's training speakers.
        bank: The labelled corpus's log-mels.
        pretrained: `pretrain`'s ``(generator, critic)``.
        clients: Speaker groups (`client_groups`).
        only: Client numbers to do (None: all).

    Returns:
        `ClientSet` of each client done, in client order.

    Raises:
        keras_ser.experiment.BadInput: A finished client that is not this run's.
        DivergenceError: A fine-tuning loss diverged.
    """
    active = [(k, m) for k, group in enumerate(clients, 1)
              if (m := [s for s in group if s in train_speakers])]
    per_client = max(1, ctx.budgets.per_class // max(1, len(active)))
    seed, sha = seeds.derive(ctx.seed, fold_name), pretrained_sha256(pretrained)
    done = []
    for k, members in active:
        if only is not None and k not in only:
            continue
        folder = os.path.join("folds", fold_name, f"client{k}")
        record = _client_record(ctx, fold_name, k, members, per_client, seed + k, sha)
        found = _reuse_client(ctx, folder, record)
        if found is not None:
            done.append(found)
            continue
        print(f"client {k} of fold {fold_name} ({', '.join(members)}): fine-tuning and "
              f"{per_client} patches per emotion")
        gen = fine_tune(ctx, pretrained, bank.subset(members), folder,
                        f"{fold_name}_client{k}")
        synthetic = os.path.join(*record["synthetic"].split("/"))
        _write_set(ctx, synthetic, synthesis.conditional_sampler(gen), per_client, seed + k,
                   f"client{k}-{fold_name}", {"fold": fold_name, "speakers": members})
        io.write_json(os.path.join(ctx.out, folder, CLIENT_RECORD), record)
        done.append(ClientSet(k, members, gen, os.path.join(ctx.out, synthetic), False))
    return done


def run_client_jobs(ctx: Context, chosen, splits: dict, groups: dict, bank: PatchBank,
                    pretrained: tuple) -> int:
    """The recipe's ``--client``: `run_clients` for the ``chosen`` clients of every fold
    in ``splits``, no SER network and no results; prints a one-line summary.

    Args:
        ctx: The run's `Context`.
        chosen: Client numbers (`choose_clients`).
        splits: ``{fold: (training speakers, held-out speakers)}``.
        groups: ``{fold: client_groups(...)}``.
        bank: The labelled corpus's log-mels.
        pretrained: `pretrain`'s ``(generator, critic)``.

    Returns:
        0, the exit status.
    """
    written = []
    for name, (train, _) in splits.items():
        print(f"\n== fold {name}: client(s) {','.join(map(str, chosen))} only")
        written += [(name, c) for c in run_clients(ctx, name, train, bank, pretrained,
                                                   groups[name], only=chosen)]
    folders = [f"folds/{f}/client{c.k} + folds/{f}/synthetic/client{c.k}" for f, c in written]
    print(f"client(s) {','.join(map(str, chosen))} done "
          f"({sum(not c.reused for _, c in written)} trained, "
          f"{sum(c.reused for _, c in written)} found finished) in {ctx.out}: "
          f"{'; '.join(folders)}. Next: copy these folders into the pooling run's folder "
          "if it is elsewhere, then run the same command without --client to pool every "
          "client's set and train the SER networks")
    return 0


def run_fold(ctx: Context, fold_name: str, train_speakers, held_out, bank: PatchBank,
             utterances: kdata.Utterances, pretrained: tuple, clients: list,
             baseline: bool = True, run: str | None = None) -> dict:
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
        run: Folder and seed name of this run of the fold: ``fold_name`` (default), or
            ``<fold>-run<k>`` for the k-th repeat of ``--seeds`` (its own stages, clients
            and seeds; the pre-trained GAN is shared).

    Returns:
        Dict: ``fold``, speakers, ``clients``, ``scores`` (per training set:
        `keras_ser.metrics.classification_report` and ``tstr``, the synthetic-only
        macro-F1 over the real-data one, our addition), ``frechet`` (our addition).
    """
    c, b = ctx.config, ctx.budgets
    run = run or fold_name
    fdir = os.path.join("folds", run)
    train = bank.subset(train_speakers)
    seed = seeds.derive(ctx.seed, run)
    print(f"\n== fold {fold_name}: train {len(train)} files ({len(train_speakers)} "
          f"speakers), test {', '.join(held_out)}")
    samplers, sets = {}, {}
    central = fine_tune(ctx, pretrained, train, os.path.join(fdir, "centralised"),
                        f"{run}_centralised")
    samplers["centralised"] = synthesis.conditional_sampler(central)
    client_sets = run_clients(ctx, run, train_speakers, bank, pretrained, clients)
    if baseline:
        samplers["baseline"] = train_baseline(ctx, train, os.path.join(fdir, "baseline"),
                                              f"{run}_baseline")
    for cond in ("centralised", "baseline"):
        if cond in samplers:
            folder = os.path.join(fdir, "synthetic", cond)
            _write_set(ctx, folder, samplers[cond], b.per_class, seed, f"{cond}-{run}",
                       {"fold": fold_name, "minmax": list(ctx.minmax)})
            sets[cond] = [os.path.join(ctx.out, folder)]
    if client_sets:
        sets["per_client"] = [c.synthetic for c in client_sets]

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
                                 f"{run}_ser_{cond}")
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
    if client_sets:
        generated["per_client"] = np.concatenate([
            synthesis.generate(c.generator, balanced[i::len(client_sets)], seed=seed + i)
            for i, c in enumerate(client_sets)])
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
            "clients": [{"client": c.k, "speakers": c.speakers} for c in client_sets],
            "scores": scores, "frechet": fd}
