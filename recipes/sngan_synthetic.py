"""SN-GAN data generation for speech emotion (Eskimez et al., Interspeech 2020), end to end.

    python recipes/sngan_synthetic.py                        # built-in smoke-test corpus
    python recipes/sngan_synthetic.py --corpus emodb --data ../shared/data/emodb \\
        --unlabelled ../shared/data/speech_unlabeled --preset cpu --folds 03,10
    python recipes/sngan_synthetic.py --corpus iemocap --data IEMOCAP_full_release \\
        --unlabelled LibriSpeech/train-clean-100 --preset paper

Method (the paper's Sec. 2-3, one block per step below):

1. Data. Corpora are converted to TFRecords (`tfrecords_tools`). Log-mel spectrograms
   (32 ms window, 16 ms hop, 512-point FFT, 128 mel bands; 64 in the ``cpu`` preset)
   are cut into patches of 128 (``cpu``: 64) frames and min-max normalised to [-1, 1]
   with the minimum and maximum of the pre-training speech.
2. Folds. IEMOCAP: leave one session out (5 folds); other corpora: leave one speaker
   out. ``--folds`` picks a subset (a count, or test speakers/sessions by name).
3. Pre-training, once, on unlabelled speech (``--unlabelled`` folders plus the labelled
   corpus's audio of speakers that no selected fold tests, labels unused):
   stage 1, autoencoder with an L1 loss (discriminator -> N_z code -> generator);
   stage 2, WGAN-GP from the autoencoder's weights (`keras_ser.training`).
4. Per fold, stage 3: the critic's output is replaced by N_c + 1 softmax units and the
   generator is fine-tuned on the training speakers with one-hot emotion conditions,
   *centralised* (all training data) and *per client* (one copy of the pre-trained GAN
   per client -- an IEMOCAP session or a group of speakers -- each on its own data).
   The *baseline* (Chatziagapi et al. 2019, `keras_ser.models.bagan`) is trained on the
   fold's emotion data: autoencoder, per-class latent Gaussians, N_c + 1 GAN.
5. Synthesis. K patches per emotion from the centralised generator and from the
   baseline, K / clients per emotion from each client's generator (pooled), written as
   TFRecords (`keras_ser.synthesis`).
6. SER. The discriminator architecture with an N_c output is trained from scratch on
   real patches, and on each synthetic set alone; the test speaker's files are scored
   with a sliding window (hop 32 frames) averaging window probabilities. Macro-F1,
   UA and WA per fold; TSTR = synthetic-only macro-F1 / real macro-F1; Fréchet
   distances between real and generated patches in the real-data SER network's
   embedding, for the pre-trained (unconditioned) and the fine-tuned generators.
7. Results. ``results.json``, ``results.md`` (the paper's Table 2 layout), PNGs of real
   vs generated patches (Fig. 2) and of one noise vector under each emotion (Fig. 3),
   TensorBoard logs per stage, the fine-tuned generators as ``.keras`` files.

Everything lands under ``--out``; re-running the same command resumes: each stage
continues from its last finished epoch, finished syntheses and SER runs are kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import keras
import numpy as np

from keras_ser import features as kfeatures
from keras_ser import folds as kfolds
from keras_ser import metrics, plots, synthesis
from keras_ser.models import bagan, sngan
from keras_ser.patches import PatchBank
from keras_ser.training import autoencoder, conditional_gan, ser, stages, wgan_gp
from keras_ser.training import bagan as bagan_training
from keras_ser.training.callbacks import atomic_json
from tfrecords_tools import synthetic, writer as twriter

SMOKE_NOTE = synthetic.BANNER

#: Iteration budgets per preset: (autoencoder, WGAN-GP, fine-tuning, SER network,
#: baseline autoencoder, baseline GAN). The paper trains far longer; ``cpu`` fits a
#: fold into minutes on 2 cores, ``smoke`` only shows the pipeline runs.
BUDGETS = {
    "paper": dict(ae_steps=20000, wgan_steps=100000, ft_steps=20000, ser_steps=30000,
                  baseline_ae_steps=10000, baseline_gan_steps=20000, per_class=40000),
    "cpu": dict(ae_steps=400, wgan_steps=1000, ft_steps=500, ser_steps=800,
                baseline_ae_steps=300, baseline_gan_steps=500, per_class=500),
    "smoke": dict(ae_steps=40, wgan_steps=40, ft_steps=30, ser_steps=60,
                  baseline_ae_steps=20, baseline_gan_steps=20, per_class=32),
}
CONDITIONS = ("real", "baseline", "centralised", "per_client")
TITLES = {"real": "Real data", "baseline": "Synthetic, baseline (Chatziagapi et al. 2019)",
          "centralised": "Synthetic, centralised SN-GAN",
          "per_client": "Synthetic, per-client SN-GANs"}
FD_SAMPLES = 1000


def parse_args(argv=None):
    """Command-line options (see ``--help``)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=None,
                   help="reader name (emodb, iemocap, ...); default: the built-in smoke "
                        "corpus when --data is not given")
    p.add_argument("--data", default=None,
                   help="corpus folder as released, or a record folder from the converter")
    p.add_argument("--unlabelled", nargs="*", default=[],
                   help="unlabelled speech for pre-training: audio folders (LibriSpeech "
                        "layout or any folder; 'speech' reader) or record folders")
    p.add_argument("--classes", default=None,
                   help="comma-separated emotion classes (default: IEMOCAP's 4, else all)")
    p.add_argument("--preset", choices=sorted(sngan.SNGAN_PRESETS), default="cpu")
    p.add_argument("--folds", default=None,
                   help="a number N (the first N folds) or comma-separated held-out "
                        "speakers/sessions, e.g. 03,10")
    p.add_argument("--clients", type=int, default=3,
                   help="per-client generators: number of speaker groups (IEMOCAP: each "
                        "training session is a client and this is ignored)")
    for key in BUDGETS["cpu"]:
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                       help=f"override the preset's {key} "
                            f"(cpu {BUDGETS['cpu'][key]}, paper {BUDGETS['paper'][key]})")
    p.add_argument("--steps-per-epoch", type=int, default=None,
                   help="iterations between checkpoints (default: 1/10 of each stage)")
    p.add_argument("--no-baseline", action="store_true", help="skip the baseline GAN")
    p.add_argument("--mixed-precision", action="store_true",
                   help="train under the mixed_bfloat16 policy (faster only on CPUs with bf16 "
                        "instructions; slower on this 2-core test machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="run folder (default runs/sngan-<corpus>-<preset>)")
    p.add_argument("--verbose", type=int, default=None,
                   help="Keras fit verbosity (default: progress bar on a terminal, else 2)")
    return p.parse_args(argv)


def select_folds(corpus: str, stats: dict, chosen) -> list:
    """``[(name, train speakers, held-out speakers)]`` of the protocol, maybe a subset.

    IEMOCAP: leave one session out (both speakers held out). Other corpora: leave one
    speaker out; the protocol's validation speaker joins the training speakers (training
    runs for a fixed number of iterations, nothing is selected on validation data).

    Raises:
        ValueError: ``chosen`` names an unknown speaker or session.
    """
    if corpus == "iemocap":
        folds = kfolds.folds_from_stats(stats, "loso-session")
        table = [(f.name.split("-")[0], f.train, sorted(f.validation + f.test)) for f in folds]
    else:
        folds = kfolds.folds_from_stats(stats, "loso-speaker")
        table = [(f.test[0], sorted(f.train + f.validation), f.test) for f in folds]
    if not chosen:
        return table
    names = [c.strip() for c in str(chosen).split(",") if c.strip()]
    known = {row[0]: row for row in table}
    for row in table:
        for spk in row[2]:
            known.setdefault(spk, row)
    if all(n in known for n in names):
        return [known[n] for n in names]
    if len(names) == 1 and names[0].isdigit() and 0 < int(names[0]) <= len(table):
        return table[:int(names[0])]
    bad = [n for n in names if n not in known]
    raise ValueError(f"--folds: unknown fold(s) {bad}; known: {sorted(known)}, or a count "
                     f"up to {len(table)}")


def client_groups(corpus: str, speakers: list, stats: dict, clients: int) -> list:
    """Speaker groups of the per-client generators: sessions (IEMOCAP) or ``clients``
    groups of consecutive sorted speakers."""
    if corpus == "iemocap":
        entries = stats.get("speakers") or {}
        groups = {}
        for s in speakers:
            groups.setdefault(entries.get(s, {}).get("session", s[:5]), []).append(s)
        return [sorted(v) for _, v in sorted(groups.items())]
    clients = max(1, min(clients, len(speakers)))
    return [[str(s) for s in part] for part in np.array_split(sorted(speakers), clients)]


def budget(args, smoke: bool) -> dict:
    """Iteration budgets: the preset's (or the smoke budget), overridden by flags."""
    out = dict(BUDGETS["smoke" if smoke else args.preset])
    for key in out:
        value = getattr(args, key)
        if value is not None:
            out[key] = value
    return out


def stage_epochs(steps: int, steps_per_epoch) -> tuple:
    """``(epochs, steps_per_epoch)`` covering ``steps`` iterations."""
    spe = steps_per_epoch or max(1, steps // 10)
    return max(1, -(-steps // spe)), spe


class Run:
    """State shared by the steps of one recipe run."""

    def __init__(self, args, out, config, classes, minmax, verbose, budgets):
        self.args, self.out, self.config = args, out, config
        self.classes, self.minmax, self.verbose, self.budgets = classes, minmax, verbose, budgets
        self.noise = np.random.default_rng(args.seed).standard_normal(
            (8, config.z_dim)).astype(np.float32)

    def path(self, *parts) -> str:
        """A file under the run folder (its parent folder created)."""
        path = os.path.join(self.out, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def folder(self, *parts) -> str:
        """A folder under the run folder (created)."""
        path = os.path.join(self.out, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def fit(self, trainer, dataset, stage: str, steps: int, folder: str, grid=None,
            optimizers=None):
        """Train a stage resumably with TensorBoard logs and optional PNG grids."""
        epochs, spe = stage_epochs(steps, self.args.steps_per_epoch)
        callbacks = []
        if grid is not None:
            generator, noise, conditions = grid
            callbacks.append(plots.SpectrogramGridCallback(
                generator, noise, log_dir=self.folder("logs", folder, "grids"),
                png_dir=self.folder(folder, "grids"),
                every=max(1, epochs // 2), tag=stage, conditions=conditions))
        return stages.fit_stage(trainer, dataset, stage=stage,
                                directory=self.folder(folder, "checkpoint"),
                                epochs=epochs, steps_per_epoch=spe, callbacks=callbacks,
                                verbose=self.verbose, log_dir=self.folder("logs", folder),
                                optimizers=optimizers)


def pretrain(run: Run, pool: PatchBank) -> tuple:
    """Stages 1-2 on the pre-training pool; returns the (generator, critic)."""
    c, b = run.config, run.budgets
    data = pool.dataset(c.batch_size, c.frames, run.minmax, seed=run.args.seed)
    zeros = np.zeros((len(run.noise), c.n_classes), np.float32)
    generator = sngan.build_generator(c)
    encoder = sngan.build_discriminator(c, "encoder")
    ae = autoencoder.AutoencoderTrainer(encoder, generator, c)
    ae.compile()
    print(f"\n== stage 1: autoencoder (L1), {b['ae_steps']} iterations on {len(pool)} "
          f"utterances")
    stage1 = run.fit(ae, data, "stage1_autoencoder", b["ae_steps"],
                     os.path.join("pretrain", "stage1"))
    critic = sngan.attach_head(sngan.trunk_of(encoder), c, "critic")
    gan = wgan_gp.WGANGPTrainer(generator, critic, c, seed=run.args.seed)
    gan.compile()
    print(f"\n== stage 2: WGAN-GP, {b['wgan_steps']} iterations")
    stage2 = run.fit(gan, data, "stage2_wgan_gp", b["wgan_steps"],
                     os.path.join("pretrain", "stage2"), grid=(generator, run.noise, zeros))
    # (Do not reload the stage-1 checkpoint here: it shares the generator and trunk.)
    history = {"stage1": stage1["history"], "stage2": stage2["history"]}
    atomic_json(run.path("pretrain", "history.json"), history)
    generator.save(run.path("pretrain", "generator.keras"))
    return generator, critic


def fine_tune(run: Run, pretrained: tuple, bank: PatchBank, folder: str, stage: str,
              seed: int):
    """Stage 3 from a copy of the pre-trained GAN; returns the fine-tuned generator."""
    c = run.config
    generator = sngan.build_generator(c)
    generator.set_weights(pretrained[0].get_weights())
    critic = sngan.build_discriminator(c, "critic")
    critic.set_weights(pretrained[1].get_weights())
    disc = sngan.attach_head(sngan.trunk_of(critic), c, "fake_class")
    trainer = conditional_gan.ConditionalGANTrainer(generator, disc, c, seed=seed)
    trainer.compile()
    conditions = sngan.condition_vectors(np.arange(len(run.noise)) % c.n_classes, c.n_classes)
    data = bank.dataset(c.batch_size, c.frames, run.minmax, seed=seed)
    run.fit(trainer, data, stage, run.budgets["ft_steps"], folder,
            grid=(generator, run.noise, conditions))
    generator.save(run.path(folder, "generator.keras"))
    return generator


def train_baseline(run: Run, bank: PatchBank, folder: str, seed: int):
    """The Chatziagapi et al. 2019 baseline on the fold's emotion data: a sampler."""
    c, b = run.config, run.budgets
    bc = bagan.preset_for(c)
    data = bank.dataset(c.batch_size, c.frames, run.minmax, seed=seed)
    generator = bagan.build_baseline_generator(bc)
    encoder = bagan.build_baseline_encoder(bc)
    ae = bagan_training.BaselineAutoencoderTrainer(encoder, generator, bc)
    ae.compile()
    run.fit(ae, data, "baseline_autoencoder", b["baseline_ae_steps"],
            os.path.join(folder, "autoencoder"), optimizers=_optimizers(ae))
    latents_path = run.path(folder, "latents.npz")
    if os.path.isfile(latents_path):
        latents = bagan.ClassLatents.load(latents_path)
    else:
        patches, labels = bank.sample(4000, c.frames, run.minmax, seed=seed, labels=True)
        latents = bagan_training.fit_class_latents(encoder, patches, labels, bc)
        latents.save(latents_path)
    disc = bagan.build_baseline_discriminator(encoder, bc)
    gan = bagan_training.BaselineGANTrainer(generator, disc, latents, bc)
    gan.compile()
    run.fit(gan, data, "baseline_gan", b["baseline_gan_steps"], os.path.join(folder, "gan"),
            optimizers=_optimizers(gan))
    generator.save(run.path(folder, "generator.keras"))
    return lambda labels, s: bagan_training.generate(generator, latents, labels, seed=s)


def _optimizers(trainer) -> dict:
    """Name -> optimiser of a baseline trainer (its GAN has two, its autoencoder one)."""
    if hasattr(trainer, "g_optimizer"):
        return {"g": trainer.g_optimizer, "d": trainer.d_optimizer}
    return {"ae": trainer.optimizer}


def sngan_sampler(generator):
    """``sample_fn(labels, seed)`` of a conditional SN generator."""
    return lambda labels, s: conditional_gan.generate(generator, labels, seed=s)


def train_ser(run: Run, dataset, folder: str, test: PatchBank) -> tuple:
    """Train the SER network (resumably) and score the test files: (model, scores)."""
    c = run.config
    model = ser.build_ser_network(c)
    run.fit(model, ser.as_pairs(dataset), "ser", run.budgets["ser_steps"], folder,
            optimizers={"adam": model.optimizer})
    probs = ser.file_probabilities(model, test, c.frames, c.hop_frames, run.minmax)
    return model, probs


def run_fold(run: Run, fold: tuple, bank: PatchBank, pretrained, clients: list) -> dict:
    """Steps 4-6 for one fold; returns its result (also written as result.json)."""
    name, train_speakers, held_out = fold
    c, args = run.config, run.args
    fdir = os.path.join("folds", name)
    done = run.path(fdir, "result.json")
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            print(f"\n== fold {name}: finished earlier")
            return json.load(f)
    t0 = time.time()
    train, test = bank.subset(train_speakers), bank.subset(held_out)
    print(f"\n== fold {name}: train {len(train)} files ({len(train_speakers)} speakers), "
          f"test {len(test)} files ({', '.join(held_out)})")
    K = run.budgets["per_class"]
    seed = args.seed + 1000 * (1 + len(name))

    # Stage 3, centralised and per client; the baseline.
    samplers, synth = {}, {}
    central = fine_tune(run, pretrained, train, os.path.join(fdir, "centralised"),
                        "stage3_centralised", seed)
    samplers["centralised"] = sngan_sampler(central)
    client_gens = []
    for k, group in enumerate(clients):
        members = [s for s in group if s in train_speakers]
        if not members:
            continue
        gen = fine_tune(run, pretrained, train.subset(members),
                        os.path.join(fdir, f"client{k + 1}"), f"stage3_client{k + 1}",
                        seed + k + 1)
        client_gens.append((k + 1, members, gen))
    if not args.no_baseline:
        samplers["baseline"] = train_baseline(run, train, os.path.join(fdir, "baseline"), seed)

    # Synthesis.
    for cond in ("centralised", "baseline"):
        if cond in samplers:
            synth[cond] = [run.folder(fdir, "synthetic", cond)]
            synthesis.write_synthetic_records(
                synth[cond][0], samplers[cond], run.classes, K, frames=c.frames,
                n_mels=c.n_mels, seed=seed, source=f"{cond}-{name}",
                metadata={"fold": name, "minmax": list(run.minmax)}, progress=False)
    per_client = max(1, K // max(1, len(client_gens)))
    synth["per_client"] = []
    for k, members, gen in client_gens:
        folder = run.folder(fdir, "synthetic", f"client{k}")
        synthesis.write_synthetic_records(
            folder, sngan_sampler(gen), run.classes, per_client, frames=c.frames,
            n_mels=c.n_mels, seed=seed + k, source=f"client{k}-{name}",
            metadata={"fold": name, "speakers": members}, progress=False)
        synth["per_client"].append(folder)

    # SER on real data and on each synthetic set.
    scores, models = {}, {}
    for cond in CONDITIONS:
        if cond == "real":
            data = train.dataset(c.batch_size, c.frames, run.minmax, seed=seed)
        elif synth.get(cond):
            data = synthesis.synthetic_dataset(synth[cond], batch_size=c.batch_size,
                                               shuffle=True, seed=seed, repeat=True,
                                               drop_remainder=True)
        else:
            continue
        print(f"-- SER network on {cond}")
        models[cond], probs = train_ser(run, data, os.path.join(fdir, f"ser_{cond}"), test)
        scores[cond] = ser.score_files(probs, test.labels, run.classes)
        print(f"   macro-F1 {scores[cond]['macro_f1']:.3f}  UA {scores[cond]['ua']:.3f}")
    real_f1 = scores["real"]["macro_f1"]
    for cond, s in scores.items():
        s["tstr"] = (s["macro_f1"] / real_f1) if cond != "real" and real_f1 > 0 else None

    # Fréchet distances in the real-data SER network's embedding.
    embed_model = sngan.trunk_of(models["real"])
    real_patches = train.sample(FD_SAMPLES, c.frames, run.minmax, seed=seed)
    real_emb = synthesis.embed(embed_model, real_patches)
    balanced = np.arange(FD_SAMPLES) % c.n_classes
    generated = {
        "pretrained": conditional_gan.generate(pretrained[0], -np.ones(FD_SAMPLES, int),
                                               seed=seed),
        "centralised": conditional_gan.generate(central, balanced, seed=seed),
        "real_test": test.sample(FD_SAMPLES, c.frames, run.minmax, seed=seed),
    }
    if client_gens:
        per = [conditional_gan.generate(g, balanced[k::len(client_gens)], seed=seed + k)
               for k, (_, _, g) in enumerate(client_gens)]
        generated["per_client"] = np.concatenate(per)
    if "baseline" in samplers:
        generated["baseline"] = samplers["baseline"](balanced, seed)
    fd = {key: synthesis.frechet_distance(real_emb, synthesis.embed(embed_model, x))
          for key, x in generated.items()}
    print("   Fréchet distance to real training patches: " +
          ", ".join(f"{k} {v:.2f}" for k, v in fd.items()))

    # Figures 2 and 3.
    plots.real_vs_generated_png(real_patches[:16], generated["centralised"][:16],
                                run.path(fdir, "real_vs_generated.png"),
                                title=f"fold {name}: real vs centralised SN-GAN")
    z = np.repeat(run.noise[:4], c.n_classes, axis=0)
    cond = np.tile(np.eye(c.n_classes, dtype=np.float32), (4, 1))
    grid = np.asarray(central([z, cond], training=False)).reshape(
        4, c.n_classes, c.frames, c.n_mels)
    plots.conditional_grid_png(grid, run.classes, run.path(fdir, "same_noise_per_emotion.png"),
                               title=f"fold {name}: one noise vector per row")
    result = {"fold": name, "train_speakers": train_speakers, "test_speakers": held_out,
              "clients": [{"client": k, "speakers": m} for k, m, _ in client_gens],
              "scores": scores, "frechet": fd, "seconds": time.time() - t0}
    atomic_json(done, result)
    return result


def summarise(results: list, classes) -> tuple:
    """``(summary dict, Markdown)`` of the per-fold results (paper Table 2 layout)."""
    summary = {}
    for cond in CONDITIONS:
        rows = [r["scores"][cond] for r in results if cond in r["scores"]]
        if not rows:
            continue
        entry = {}
        for key in ("macro_f1", "ua", "wa", "tstr"):
            values = [row[key] for row in rows if row.get(key) is not None]
            if values:
                mean, std = metrics.mean_std(values)
                entry[key] = {"mean": mean, "std": std, "folds": values}
        summary[cond] = entry
    fd_keys = sorted({k for r in results for k in r["frechet"]})
    frechet = {k: metrics.mean_std([r["frechet"][k] for r in results if k in r["frechet"]])
               for k in fd_keys}

    def cell(entry, key, percent=True):
        if key not in entry:
            return "–"
        scale = 100 if percent else 1
        return f"{entry[key]['mean'] * scale:.1f} ± {entry[key]['std'] * scale:.1f}" \
            if percent else f"{entry[key]['mean']:.2f} ± {entry[key]['std']:.2f}"

    lines = ["| Training data | macro-F1 (%) | UA (%) | WA (%) | TSTR (F1 ratio) |",
             "|---|---|---|---|---|"]
    for cond, entry in summary.items():
        lines.append(f"| {TITLES[cond]} | {cell(entry, 'macro_f1')} | {cell(entry, 'ua')} | "
                     f"{cell(entry, 'wa')} | {cell(entry, 'tstr', percent=False)} |")
    lines += ["", "| Patches | Fréchet distance to real training patches |", "|---|---|"]
    names = {"pretrained": "pre-trained generator (stage 2, no condition)",
             "centralised": "centralised, after fine-tuning",
             "per_client": "per-client, after fine-tuning", "baseline": "baseline",
             "real_test": "real patches of the held-out speakers (reference)"}
    for k in ("pretrained", "centralised", "per_client", "baseline", "real_test"):
        if k in frechet:
            lines.append(f"| {names[k]} | {frechet[k][0]:.2f} ± {frechet[k][1]:.2f} |")
    lines += ["", "| Fold | " + " | ".join(TITLES[c].split(",")[-1].strip() for c in summary)
              + " |", "|---|" + "---|" * len(summary)]
    for r in results:
        lines.append(f"| {r['fold']} | " + " | ".join(
            f"{100 * r['scores'][c]['macro_f1']:.1f}" if c in r["scores"] else "–"
            for c in summary) + " |")
    return {"conditions": summary,
            "frechet": {k: {"mean": v[0], "std": v[1]} for k, v in frechet.items()}}, \
        "\n".join(lines)


def main(argv=None) -> int:
    """Run the recipe; returns the exit status (0, or 2 for bad options or data)."""
    args = parse_args(argv)
    start = time.time()
    smoke = args.data is None
    corpus = "smoke" if smoke else args.corpus
    if corpus is None:
        print("error: --data needs --corpus (a reader name)", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", f"sngan-{corpus}-{args.preset}")
    os.makedirs(out, exist_ok=True)
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    # 1. Data.
    try:
        records = (synthetic.smoke_records(out) if smoke
                   else twriter.records_for(corpus, args.data, out))
        unlabelled = [twriter.records_for("speech", d, os.path.join(
            out, "unlabelled", os.path.basename(os.path.normpath(d)))) for d in args.unlabelled]
        with open(os.path.join(records, "stats.json"), encoding="utf-8") as f:
            stats = json.load(f)
        present = sorted(k for k, v in stats["emotion"].items() if v > 0)
        if args.classes:
            classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        elif corpus == "iemocap":
            classes = ["anger", "happiness", "neutral", "sadness"]
        else:
            classes = present
        missing = [c for c in classes if c not in present]
        if missing:
            raise ValueError(f"--classes: {missing} not in {records} (has {present})")
        # The smoke corpus has 4 speakers: test 2, pre-train on the other 2.
        fold_list = select_folds(corpus, stats, args.folds or ("2" if smoke else None))
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    config = sngan.get_sngan_preset(args.preset, n_classes=len(classes))
    feats = kfeatures.get_preset("eskimez").replace(n_mels=config.n_mels)
    budgets = budget(args, smoke)
    verbose = args.verbose if args.verbose is not None else (1 if sys.stdout.isatty() else 2)

    tested = sorted({s for _, _, held in fold_list for s in held})
    print(f"{corpus}: {stats['records']} records, classes {classes}, folds "
          f"{[f[0] for f in fold_list]}; log-mel {feats.window_ms:g} ms / {feats.hop_ms:g} "
          f"ms / {feats.n_fft}-point FFT / {feats.n_mels} mels, patches {config.frames} frames")
    bank = PatchBank.from_records(records, feats, classes=classes)
    pool_parts = [PatchBank.from_records(u, feats, labelled=False) for u in unlabelled]
    corpus_speakers = sorted(set(bank.speakers) - set(tested))
    if corpus_speakers:
        own = PatchBank.from_records(records, feats, speakers=corpus_speakers, labelled=False)
        pool_parts.append(own)
    if not pool_parts:
        print("error: no pre-training speech: every speaker is tested by a selected fold and "
              "no --unlabelled folder was given", file=sys.stderr)
        return 2
    pool = PatchBank.join(pool_parts)
    minmax = pool.minmax()
    print(f"pre-training pool: {len(pool)} utterances ({sum(pool.frames)} frames), corpus "
          f"speakers {corpus_speakers}; min-max {minmax[0]:.1f} .. {minmax[1]:.1f} dB")
    config_doc = {"argv": sys.argv[1:] if argv is None else list(argv), "corpus": corpus,
                  "records": records, "unlabelled": unlabelled, "classes": classes,
                  "folds": [{"name": n, "train": t, "test": h} for n, t, h in fold_list],
                  "preset": args.preset, "config": config.to_dict(), "budgets": budgets,
                  "features": {"window_ms": feats.window_ms, "hop_ms": feats.hop_ms,
                               "n_fft": feats.n_fft, "n_mels": feats.n_mels},
                  "minmax_db": list(minmax), "pretrain_corpus_speakers": corpus_speakers,
                  "clients": args.clients, "seed": args.seed, "smoke_test_corpus": smoke,
                  "mixed_precision": args.mixed_precision}
    atomic_json(os.path.join(out, "config.json"), config_doc)
    run = Run(args, out, config, classes, minmax, verbose, budgets)
    keras.utils.set_random_seed(args.seed)

    # 3. Pre-training.
    try:
        pretrained = pretrain(run, pool)
        # 4-6. Folds.
        results = []
        for fold in fold_list:
            clients = client_groups(corpus, fold[1], stats, args.clients)
            results.append(run_fold(run, fold, bank, pretrained, clients))
    except stages.DivergenceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3

    # 7. Results.
    summary, table = summarise(results, classes)
    header = (f"# SN-GAN data generation (Eskimez et al. 2020): {corpus}, preset "
              f"{args.preset}\n\n" + (f"**{SMOKE_NOTE}**\n\n" if smoke else "") +
              f"Folds (held-out speakers): {', '.join(r['fold'] for r in results)}. "
              f"SER network trained for {budgets['ser_steps']} iterations; K = "
              f"{budgets['per_class']} synthetic patches per emotion. Macro-F1 / UA / WA "
              f"over the held-out files, mean ± std over folds; TSTR = synthetic-only "
              f"macro-F1 / real macro-F1. Chance UA {100 / len(classes):.1f}%.\n\n")
    with open(os.path.join(out, "results.md.tmp"), "w", encoding="utf-8") as f:
        f.write(header + table + "\n")
    os.replace(os.path.join(out, "results.md.tmp"), os.path.join(out, "results.md"))
    atomic_json(os.path.join(out, "results.json"),
                {"summary": summary, "folds": results, "classes": classes,
                 "config": config_doc, "seconds": time.time() - start})
    print("\n" + table)
    print(f"\nresults in {out} ({(time.time() - start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
