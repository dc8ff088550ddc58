"""TrainConfig: every setting of a training, with why each default is what it is (measured in bench/RESULTS.md).

Kept apart from training.py, which runs a training: these are the choices, with the ablations that decided them.
A model file keeps the settings it was trained with (`to_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .filters import DEFAULT_SIGMAS
from .starting_points import AUTO

DEFAULT_SECONDS = 180.0


@dataclass
class TrainConfig:
    seconds: float | None = DEFAULT_SECONDS  # wall-clock budget; used when iterations is None
    iterations: int | None = None  # fixed budget (deterministic); wins over seconds
    # A seconds budget also ends after this many iterations (None: no cap). With 30 strokes per class the
    # network fits the strokes and then drifts: 1600 iterations instead of 750 on the same strokes, isbi2012-em
    # seed 1: T2 0.706 -> 0.661, the membrane drawn on 33% of the pixels against 21.5% (bench/RESULTS.md,
    # session 19). A fast CPU runs ~1650 in the default 180 s, a GPU several thousand; the cap ends there sooner.
    max_iterations: int | None = 750
    # The same for a correction round (fine-tuning from a model), 750 like a first training. After 375 steps the
    # corrected network was worse than its start on the other slices (isbi2012-em 6 of 8 seeds, up to -0.028;
    # the same steps on the old strokes alone were level), and the round's prediction, averaged with its start,
    # was level (T2 +0.0006). After 750 it gains: isbi2012-em T2 +0.006 (7 of 8 seeds; higher than with 375 on 8
    # of 8), dsb2018-fluo +0.0003 (-0.0014 with 375; 4 seeds; session 19's reason for 375, dsb2018-fluo's longer
    # rounds losing, no longer holds). As long as a first training, about 90 s on a 2-core CPU (session 35).
    max_finetune_iterations: int | None = 750
    patch_size: int = 192  # context matters more than batch size with few strokes (bench/RESULTS.md)
    batch_size: int = 4
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.05
    labeled_fraction: float = 0.75
    # Classes are balanced by sampling (a class is picked uniformly, then one of its labeled pixels), which is
    # enough for strokes: weighting the loss as well measured worse with them (sessions 2 and 58). Densely
    # painted images (a whole slice, an imported label map) bring their class mix into every patch instead, and
    # a rare class is then hardly learned: dsb2018-fluo's 3 images fully labeled (35x more background than
    # nucleus border) gave T2 0.724 unweighted, 0.746 weighted, its networks alone 0.627 / 0.747 (3 seeds;
    # bench/RESULTS.md, session 58). None: median-frequency weights in the loss when the labels are dense
    # (training.DENSE_LABELS); True / False: always / never.
    class_balance: bool | None = None
    correction_weight: float = 1.0  # weight of pixels labeled since the init model was trained (corrections)
    # Fine-tuning: share of the stroke-centered patches centered on a correction instead. Off: the gain first
    # measured for 0.5 came from a bug that sent those patches to unpainted images (bench/RESULTS.md).
    correction_focus: float = 0.0
    augment: bool = True
    max_scale: float = 1.25  # scale augmentation range [1/max_scale, max_scale]; 1 = off
    # Share of the patches rotated by up to 20 degrees and elastically deformed (patches.PatchSampler._warp).
    # 0.5, first models of 750 iterations, paired seeds 0-3: dsb2018-fluo T2 +0.003 / +0.005 / +0.005 / +0.014,
    # isbi2012-em -0.010 / +0.003 / -0.002 / +0.004. Off: after a correction round with it isbi2012-em is behind
    # (-0.013 / -0.006, seeds 0-1), and the where-to-paint curves were not run with it (bench/RESULTS.md,
    # session 23). On top of the line-position loss (session 24) dsb2018-fluo is 0.005 lower with it.
    elastic_probability: float = 0.0
    seed: int = 0
    device: str = "auto"
    base_width: int = 16
    levels: int = 4
    input_filters: bool = True
    filter_sigmas: tuple[float, ...] = DEFAULT_SIGMAS
    finetune_lr_factor: float = 0.3  # fine-tuning starts from good weights: smaller steps
    # Fine-tuning: labeled_fraction of a correction round. The model already knows the strokes; random patches
    # of the painted images show strokes and corrections in context at their natural frequency, so the few
    # corrections of one class do not dominate the round (0.25 vs 0.75: better on dsb2018-fluo in 4 of 4
    # paired seeds, bench/RESULTS.md, session 5).
    finetune_labeled_fraction: float = 0.25
    ema_decay: float = 0.99  # > 0: return an exponential moving average of the weights (smoother with few labels)
    # Pseudo-labels on the whole stack: confident predictions of a teacher (the EMA model, or the model being
    # fine-tuned) on random patches of every image, labeled or not, become extra targets.
    pseudo_label_weight: float = 1.0
    pseudo_label_threshold: float = 0.9
    # The student sees a harder view of the pseudo-labeled patches than the teacher did: blurred (sigma up to
    # 1.5 px) and with its contrast scaled by 0.6-1.4, on top of the noise (FixMatch's weak/strong split).
    # First model, 750 iterations, paired seeds 0-3: isbi2012-em T2 +0.011 / +0.015 / +0.025 / +0.002, T1 up
    # as well; dsb2018-fluo level, +0.003 / -0.004 / -0.005 / +0.004 (bench/RESULTS.md, session 20). A pasted
    # box of another patch (CutMix) instead: isbi about the same, dsb -0.014 to +0.025 (its cut edges).
    pseudo_label_strong_view: bool = True
    # Fine-tuning: a class's threshold drops to this quantile of the teacher's confidence on the pixels it
    # gives that class (never above pseudo_label_threshold), so a thin class the teacher is rarely 90% sure
    # of keeps a share of pseudo-labels. 0 = off (the default). It helped one round in session 6, but over
    # several rounds it is a ratchet: half of whatever the teacher calls thin class is taught back to the
    # student, unsure pixels included, so each round draws the 1-pixel nucleus border thicker (2.1% -> 5.2%
    # of the pixels in three rounds against 2.3% in the reference). Off: the same or better after three
    # rounds in all ten session-16 where-to-paint cells, both people (with session 12's older rounds it
    # was level on average; bench/RESULTS.md, session 16).
    finetune_pseudo_label_class_quantile: float = 0.0
    pseudo_label_start: float = 0.3  # fraction of the budget before the EMA teacher is trusted
    pseudo_label_min_steps: int = 200  # ...and at least this many steps: a young teacher's confidence misleads
    # After training: correct the class prior the strokes taught for the stack's own class mix, estimated on
    # this many images spread over the stack (calibration.py; 0 = off). Thin classes get thinner: T2 +0.009 /
    # +0.019 on the two benchmark sets, better in 10 of 10 runs (bench/RESULTS.md, session 9). A retraining
    # carries its start's correction instead, moved with the class mix of the labels less the corrections
    # (calibration.carried_log_prior_shift); estimated afresh when its start has none, or when its loss weighs
    # the classes (dense labels, `class_balance`).
    prior_correction_images: int = 8
    # A correction round's model predicts with its network averaged with the prediction the round started
    # from: 1/2 its network, 1/4 the one before, ... (model_file.round_weights). Averaging with the start
    # gained in more paired runs, and more on average, than the round's network alone (bench/RESULTS.md,
    # session 10); halving over all rounds instead of the last two networks: round 3 +0.006 for the suggested
    # person (5 of 5 runs), level for the random one (session 17). At most this many networks (the oldest
    # gets the remaining weight); each costs one prediction pass. 1 = the round's network alone.
    round_networks: int = 4
    # When the first training began from a shipped starting point, its network keeps this share of every later
    # round's prediction (the newer networks halve the rest; 0 = halved like them). Why: the start knows the
    # images nobody painted, and round networks fine-tuned again and again on the few images the suggestions
    # send the person back to lose some of it. dsb2018-fluo's where-to-paint rounds, 10 seeds: T2 after round 3
    # +0.0015 for the suggested person, +0.0012 for the random one (8 of 10 up each); the one seed the start did
    # not lift loses (-0.003) (bench/RESULTS.md, session 57). The first round is unchanged (1/2 each either way).
    start_network_share: float = 0.5
    # Classes painted as 1-pixel lines while others are painted with a brush are predicted as 1-pixel lines
    # (line_classes.py): dsb2018-fluo's nucleus border, drawn three times too thick otherwise.
    thin_line_classes: bool = True
    # A line class's traced pixels must be more of that class than their 4-neighbours not painted with it, by a margin
    # in log-probability (line_position_loss), with this weight; 0 = off. Why: the traced pixels say where the
    # line is but not where it is not, so the network drew a flat band about three pixels wide whose ridge
    # (where the line is drawn) missed the traced pixel: on dsb2018-fluo's painted images a traced border
    # pixel was above all its unpainted flanks in 27% of the cases. With weight 1 and margin 0.5, first models
    # of 750 iterations, paired seeds 0-3: dsb2018-fluo T2 +0.010 / +0.004 / +0.039 / +0.025, T1 -0.005 on
    # average; weight 0.5: T2 +0.015, weight 2 or margin 1: less (bench/RESULTS.md, session 24).
    line_position_weight: float = 1.0
    line_position_margin: float = 0.5
    # The random-forest pixel classifier (pixel_forest.py), fit after every training on the same labels and on
    # the networks' confident pixels of the painted images and `forest_teacher_images` others (forest_teacher.py),
    # gets this share of each prediction (a line class at most pixel_forest.LINE_CLASS_WEIGHT); 0 = off.
    # Averaged before the thinning and the unsure-piece rules. The forest of the labels alone at 0.2: on the
    # benchmark's first models isbi2012-em T2 +0.008 (8 of 8 seeds), T1 +0.008; dsb2018-fluo T2 +0.002, T1
    # +0.007 (session 43). Taught by the networks at 0.5: a further isbi2012-em T2 +0.008 (8 of 8), T1 +0.005;
    # dsb2018-fluo T2 +0.002, T1 +0.003 (12 of 12) (session 45); the forest of the labels alone at 0.5 lost
    # dsb2018-fluo's T2 (session 42). With its map smoothed (pixel_forest.SMOOTHING) a larger share wins: 0.65
    # (session 49); unsmoothed, 0.65 lost dsb2018-fluo T2 (-0.0012, 1 of 8 seeds up).
    forest_weight: float = 0.65
    forest_teacher_images: int = 6  # 0: the forest of the labels alone
    # A first training starts from a network the project pretrained (starting_points.py) when one fits the
    # classes and agrees with the strokes ("auto"), from random weights ("none"), or from the one named.
    # dsb2018-fluo's first models: T2 +0.0078 (11 of 12 seeds up, one level; standard error 0.0012), T1 +0.0022;
    # the correction round still gains (+0.0011, 8 of 12 up) (bench/RESULTS.md, session 55). Where to paint from
    # it: the suggested person ahead of the random one after every round (sessions 56-57, with the first
    # network kept at 1/2 in later rounds). isbi2012-em has 2 classes, so no shipped start applies.
    starting_point: str = AUTO
    # The network in float16 on CUDA; the predictions that estimate the class-prior correction also in
    # bfloat16 on CPUs with AMX units (devices.autocast_dtype). False: float32 everywhere.
    mixed_precision: bool = True

    def to_dict(self) -> dict:
        return asdict(self)
