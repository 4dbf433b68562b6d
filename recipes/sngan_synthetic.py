"""SN-GAN data generation for speech emotion (Eskimez et al., Interspeech 2020), end to end.

    python recipes/sngan_synthetic.py                        # built-in smoke-test corpus
    python recipes/sngan_synthetic.py --corpus emodb --data ../shared/data/emodb \\
        --unlabelled ../shared/data/speech_unlabeled --preset cpu --folds 03,10
    python recipes/sngan_synthetic.py --corpus iemocap --data IEMOCAP_full_release \\
        --unlabelled LibriSpeech/train-clean-360 --preset paper
    python recipes/sngan_synthetic.py ... --client 2         # client 2's fine-tuning only

Method (the paper's Secs. 3-4; `main` follows it):

1. Data. Corpora converted to TFRecords; IEMOCAP with excited merged into happy, four
   emotions (Sec. 4.1). Log-mels (32 ms window, 16 ms hop, 512-point FFT, 128 mel
   bands; 64 in the ``cpu`` preset) cut into 128-frame patches (``cpu``: 64), min-max
   normalised to [-1, 1] with the extremes of the pre-training speech and the labelled
   training corpus (Sec. 4.2).
2. Folds. IEMOCAP: leave one session out (Sec. 4.4). Other corpora: leave one speaker
   out. ``--folds`` picks a subset.
3. Pre-training, once, on unlabelled speech (``--unlabelled``; our addition: the
   labelled corpus's speakers that no selected fold holds out, labels unused): stage 1,
   autoencoder with an L1 loss; stage 2, WGAN-GP from its weights (Sec. 3.2).
4. Per fold: stage 3, the critic's output replaced by N_c + 1 softmax units and the
   generator fine-tuned with one-hot emotions, centralised and per client (one copy
   per IEMOCAP session, Sec. 4.5); the Chatziagapi et al. 2019 baseline. ``--client k``
   (repeatable, or ``1,3``) runs client k's fine-tuning and synthetic set alone on every
   selected fold, pre-training first unless ``pretrain/`` is in ``--out``, and stops, so
   clients can run on separate machines, each from a copy of the same pre-trained GAN as
   in the paper's federated setting; the run without ``--client`` pools the clients it
   finds finished (folders ``folds/<fold>/client<k>`` and ``folds/<fold>/synthetic/
   client<k>``) and fine-tunes any missing one itself (our choice).
5. Synthesis: K patches per emotion centralised and from the baseline, K / clients from
   each client's generator, as TFRecords.
6. SER: the discriminator architecture with N_c outputs trained on real patches or on
   one synthetic set (Sec. 4.3), or on real patches plus one synthetic set (our addition); the held-out files scored with a sliding window (hop 32
   frames) averaging window probabilities, as the exported model does.
7. Results: macro-F1 / UA / WA per training set (the paper's Table 2 reports F1), TSTR,
   real + synthetic against real alone (paired Wilcoxon over folds) and Fréchet
   distances (our additions), the eGeMAPS + SVM reference rows, Figures 2 and 3 as PNGs, TensorBoard logs, and
   the real-data SER network exported as a SavedModel.

Everything lands under ``--out``; re-running the same command resumes exactly.
"""

from __future__ import annotations

import os
import sys
import time

import keras_ser  # noqa: F401  before keras: quiets TensorFlow's start-up (keras_ser.quiet)

# isort: split
import keras

from keras_ser import data, experiment, seeds
from keras_ser import features as kfeatures
from keras_ser.experiment import Metric
from keras_ser.models import sngan
from keras_ser.patches import PatchBank
from keras_ser.protocols import sngan as protocol

IEMOCAP_CLASSES = ("anger", "happiness", "neutral", "sadness")
COLUMNS = [Metric("macro_f1", "macro-F1"), Metric("ua", "UA"), Metric("wa", "WA"),
           Metric("tstr", "TSTR (F1 ratio)", percent=False),
           Metric("gain_f1", "gain over real (macro-F1 points)")]
FRECHET_ROWS = {"pretrained": "pre-trained generator (stage 2, no condition)",
                "centralised": "centralised, after fine-tuning",
                "per_client": "per-client, after fine-tuning", "baseline": "baseline",
                "real_test": "real patches of the held-out speakers (reference)"}


def parse_args(argv=None):
    """Command-line options (see ``--help``)."""
    p = experiment.parser(__doc__, sngan.SNGAN_PRESETS)
    p.add_argument("--clients", type=int, default=3,
                   help="per-client generators: speaker groups (IEMOCAP: its sessions)")
    p.add_argument("--client", action="append", default=[], metavar="K",
                   help="only fine-tune client K (1-based; repeatable or 1,3) and write its "
                        "synthetic set, then stop; a run without it pools every client")
    for key in ("ae_steps", "wgan_steps", "ft_steps", "ser_steps", "baseline_ae_steps",
                "baseline_gan_steps", "per_class", "steps_per_epoch"):
        p.add_argument(f"--{key.replace('_', '-')}", type=int, default=None,
                       help=f"override the preset's {key}")
    p.add_argument("--no-baseline", action="store_true", help="skip the Chatziagapi et al. baseline GAN (the eGeMAPS "
                   "reference rows are --baseline)")
    p.add_argument("--mixed-precision", action="store_true",
                   help="train under mixed_bfloat16 (faster only on CPUs with AVX-512 BF16 "
                        "or GPUs; run benchmarks/gan_step.py to check)")
    return p.parse_args(argv)


def pools(corpus, bank, features, splits) -> tuple:
    """``(pre-training pool, min-max range)``. The pool: the ``--unlabelled`` speech and
    the labelled speakers no fold holds out. The range: over the pool and the training
    speakers of the folds (all folds: the whole corpus, as the paper's "combined
    Librispeech and IEMOCAP datasets").

    Raises:
        experiment.BadInput: No pre-training speech at all.
    """
    held = {s for _, out in splits.values() for s in out}
    trained = sorted({s for train, _ in splits.values() for s in train})
    parts = [PatchBank.from_records(u, features, labelled=False) for u in corpus.unlabelled]
    own = sorted(set(bank.speakers) - held)
    if own:
        parts.append(PatchBank.from_records(corpus.records, features, speakers=own,
                                            labelled=False))
    if not parts:
        raise experiment.BadInput("no pre-training speech: every speaker is held out by a "
                                  "selected fold and no --unlabelled folder was given")
    pool = PatchBank.join(parts)
    return pool, PatchBank.join([pool, bank.subset(trained)]).minmax()


def report(out, corpus, results, splits, budgets, classes, args, started,
           reference) -> dict:
    """``results.json``/``results.md``: the paper's Table 2 (macro-F1, with UA, WA and
    TSTR) per training set with the eGeMAPS reference rows, real + synthetic against
    real alone (paired over folds), and the Fréchet distances. Returns the summary."""
    entries = [{"row": c, "fold": r["fold"], "test": r["scores"][c], "repeat": r["repeat"]}
               for r in results for c in protocol.CONDITIONS if c in r["scores"]]
    f1 = Metric("macro_f1", "Test macro-F1")
    gains = experiment.paired_tests(entries, [c for c in protocol.CONDITIONS if "+" in c and
                                              any(e["row"] == c for e in entries)],
                                    "real", "macro_f1")
    frechet = experiment.summarise(
        [{"row": k, "fold": r["fold"], "test": {"fd": v}} for r in results
         for k, v in r["frechet"].items()], list(FRECHET_ROWS), ["fd"])
    return experiment.write_results(
        out, title=f"SN-GAN data generation (Eskimez et al. 2020) on {corpus.name}", header=[
            f"Held out per fold: {', '.join(f'{n}: {h}' for n, (_, h) in splits.items())}.",
            f"Budgets: {budgets.to_dict()}; preset {args.preset}.",
            ("Scores over the held-out files (window hop 32 frames, mean probability); TSTR = "
             "synthetic-only macro-F1 / real macro-F1 (our addition; the paper reports F1)."),
            ("Real + synthetic (our addition): every SER batch half real, half synthetic "
             "patches; gain = its macro-F1 minus the real-only row's, same fold."),
            f"Chance UA {100 / len(classes):.1f}%."],
        entries=entries, rows=protocol.CONDITIONS, row_titles=protocol.TITLES,
        columns=COLUMNS, main=f1, folds=results, baseline=reference,
        smoke=corpus.smoke, started=started, row_header="Training data",
        document={"classes": classes, "frechet": frechet, "paired_tests_vs_real": gains},
        sections=[*([experiment.paired_tests_markdown(gains, "Real data", f1, protocol.TITLES)]
                    if gains else []),
                  "## Fréchet distance to real training patches (our addition)\n\n| Patches |"
                  " mean ± std over folds |\n|---|---|\n" + "\n".join(
                      f"| {FRECHET_ROWS[k]} | {v['fd']['mean']:.2f} ± {v['fd']['std']:.2f} |"
                      for k, v in frechet.items())])


@experiment.recipe_main
def main(argv=None) -> int:
    """Run the recipe; returns the exit status (0; 2 for bad options or data; 3 when a
    stage diverges)."""
    args, started = parse_args(argv), time.time()
    out = experiment.out_dir(args, "sngan")
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    # 1. Data.
    corpus = experiment.load_corpus(args, out, options={"merge_excited": True}
                                    if args.corpus == "iemocap" else None)
    iemocap = corpus.name == "iemocap"
    classes = experiment.choose_classes(corpus, args.classes, IEMOCAP_CLASSES if iemocap else None)
    config = sngan.get_sngan_preset(args.preset, n_classes=len(classes))
    features = kfeatures.get_preset("eskimez").replace(n_mels=config.n_mels)
    bank = PatchBank.from_records(corpus.records, features, classes=classes)
    # 2. Folds.
    folds = experiment.choose_folds(corpus, "loso-session" if iemocap else "loso-speaker",
                                    args.folds or ("2" if corpus.smoke else None), out)
    splits = {f.name: protocol.split(f, corpus.name) for f in folds}
    groups = {name: protocol.client_groups(corpus.name, train, corpus.stats, args.clients)
              for name, (train, _) in splits.items()}
    chosen = protocol.choose_clients(args.client, groups) if args.client else None
    pool, minmax = pools(corpus, bank, features, splits)
    budgets = protocol.BUDGETS["smoke" if corpus.smoke else args.preset].replace(**{
        k: getattr(args, k) for k in protocol.Budgets.__dataclass_fields__})
    ctx = protocol.Context(out, config, classes, minmax, budgets, args.seed, verbose=
                           experiment.verbosity(args), reseed=lambda name: keras.utils.
                           set_random_seed(seeds.derive(args.seed, name)))
    experiment.write_config(out, args, argv, corpus, classes=classes, architecture=config,
                            budgets=budgets, splits=splits, minmax_db=list(minmax),
                            clients=args.clients, mixed_precision=args.mixed_precision)
    print(f"{corpus.name}: classes {classes}, folds {list(splits)}; pre-training pool "
          f"{len(pool)} utterances; min-max {minmax[0]:.1f} .. {minmax[1]:.1f} dB")
    # 3. Pre-training.
    pretrained = protocol.pretrain(ctx, pool)
    if chosen:  # 4-5 for the chosen clients only (one machine's share of the clients).
        return protocol.run_client_jobs(ctx, chosen, splits, groups, bank, pretrained)
    # 4-6. Fine-tuning (pooling clients finished by --client runs), synthesis and SER.
    utterances = data.Utterances(corpus.records, classes=classes)
    results = experiment.run_folds(
        out, [None], folds, args.seed, lambda _, fold, path, seed: protocol.run_fold(
            ctx, fold.name, *splits[fold.name], bank, utterances, pretrained,
            groups[fold.name], baseline=not args.no_baseline, run=os.path.basename(path)),
        folder=lambda _, fold: os.path.join(out, "folds", fold.name), repeats=args.seeds)
    # 7. Results, with the eGeMAPS reference on the same held-out files (C chosen by
    # cross-validation over the training speakers: these folds have no validation speaker).
    reference = experiment.baseline_rows(
        args, corpus, folds, out, utterances, class_names=classes,
        split=lambda fold: (utterances.indices(splits[fold.name][0]), [],
                            utterances.indices(splits[fold.name][1])))
    report(out, corpus, results, splits, budgets, classes, args, started, reference)
    if not args.no_export:
        first = results[0]["fold"]
        experiment.export(out, "sngan_ser", keras.models.load_model(os.path.join(
            out, "folds", first, "ser_real", "classifier.keras")), ctx.front_end(), classes,
            {"recipe": "sngan_synthetic", "training_set": "real", "fold": first})
    return 0


if __name__ == "__main__":
    sys.exit(main())
