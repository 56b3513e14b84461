"""The typed ``analysis`` section of ``results.json``: what :func:`edgescale.report.analysis.analyse`
computes once at the end of a study and the report reads.

Frontiers per cost axis, a degradation law per recipe, the pick per device (a variant, or the
model to train), the recipe comparison and the train-small-or-compress routes. Field order is
the order written, and :meth:`~edgescale.results.base.Strict.data` leaves out fields that were
never set, so a section reads and writes back byte for byte; a typo'd key fails validation.
Non-finite numbers are written as ``null`` (hence the many ``| None``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from edgescale.results.base import Number, PlanForTarget, Speedup, Strict

# -- frontiers (edgescale.report.frontier.frontiers) ----------------------------------------


class FrontEntry(Strict):
    variant_id: str
    cost: Number | None
    loss_bpb: Number | None
    tie_with: list[str] | None = Field(
        None, description="variants off the front only because their cost ties with this one's within the noise floor"
    )


class Frontier(Strict):
    """One cost axis: its label and source, and its Pareto front, cheapest first."""

    label: str
    source: str = Field(description="measured | predicted | estimate | computed")
    loss_split: str
    noise_floor: Number | None = Field(
        None, description="measured axes: costs within this relative A/A noise floor of each other are ties"
    )
    front: list[FrontEntry]
    excluded: list[str] = Field(description="variants without a figure on this axis")


# -- degradation laws (edgescale.report.degradation.DegradationFit.to_dict) -------------------


class DegradationPoint(Strict):
    size: str
    n: Number
    d: Number
    delta_bpb: Number
    delta_test_bpb: Number | None = None
    se_bpb: Number | None = Field(None, description="standard error of delta_bpb (paired over windows if se_paired)")
    se_paired: bool | None = None
    within_noise: bool | None = Field(None, description="|δ| < 1.96·se_bpb")
    seed: int | None = Field(None, description="the training run's seed (degradation-grid points)")


class DegradationCurvePoint(Strict):
    n: Number
    d: Number
    delta: Number | None
    low: Number | None
    high: Number | None


class DegradationLaw(Strict):
    """One recipe's loss change against the baseline as a law of N and D (the fitted form)."""

    recipe: str
    baseline: str
    form: str = Field(description="power_law_nd | power_law_n | constant_mean | none (per-size δ only)")
    sign: Number
    coef: list[Number]
    points: list[DegradationPoint]
    r2_log: Number | None = None
    rmse_log: Number | None = None
    dof: int
    residuals_log: list[Number | None]
    notes: list[str]
    gamma_n: Number | None = None
    gamma_d: Number | None = None
    gamma_n_ci: list[Number] | None = Field(None, description="bootstrap 95% interval of γ_N")
    gamma_d_ci: list[Number] | None = Field(None, description="bootstrap 95% interval of γ_D")
    c_ci: list[Number] | None = Field(None, description="bootstrap 95% interval of C")
    n_points: int
    curve: list[DegradationCurvePoint] | None = None


# -- picks (edgescale.report.pick.pick, edgescale.report.extrapolate.new_model) ----------------


class DeviceLatency(Strict):
    """A variant's latency on a device, measured or predicted, in one shape (``pick.latency_on``)."""

    device: str
    source: str
    decode_ms: Number | None
    decode_ms_low: Number | None
    decode_ms_high: Number | None
    interval: str | None
    prefill_ms: Number | None
    energy_mj_per_token: Number | None


class PickLimits(Strict):
    max_latency_ms: Number | None
    memory_bytes: Number | None
    memory_limit: str


class PickLoss(Strict):
    selected_on: str
    validation_bpb: Number | None
    test_bpb: Number | None
    test_meets_target: bool | None
    validation_se_bpb: Number | None = Field(None, description="standard error of validation_bpb (older runs: none)")
    test_se_bpb: Number | None = Field(None, description="standard error of test_bpb (older runs: none)")


class PickCost(Strict):
    axis: str
    label: str
    value: Number | None


class PickedVariant(Strict):
    run: str
    variant_id: str
    size: str
    recipe: str
    params_total: Number
    params_non_embedding: Number
    loss: PickLoss
    cost: PickCost
    latency: DeviceLatency | None
    peak_memory_bytes: Number | None
    file_bytes: Number | None
    onnx_path: str | None
    onnx_file: str | None
    onnx_sha256: str | None
    flags: list[str]
    warnings: list[str]


class LawCheck(Strict):
    size: str
    law_bpb: Number | None
    onnx_validation_bpb: Number | None


class LawInfo(Strict):
    """Which scaling law answered (``extrapolate.run_law``), whether to trust it, and its check."""

    law: str
    source: str
    unit: str
    reliable: bool
    caveat: str | None = None
    check: list[LawCheck] | None = None
    run: str | None = None


class DeviceCost(Strict):
    """A planned model's predicted cost on the device (``extrapolate.device_cost``)."""

    params: Number
    bits_per_weight: Number
    bytes_per_decoded_token: Number
    flops_per_token: Number
    source: str
    decode_ms: Number | None
    prefill_ms: Number | None
    energy_mj_per_token: Number | None
    memory_bytes: Number | None
    fits_device: bool | None
    assumptions: list[str] | None = None


class DegradationAt(Strict):
    delta: Number | None
    low: Number | None
    high: Number | None
    form: str


class RecipeScale(Strict):
    recipe: str
    bits_per_weight: Number
    params_ratio: Number
    recovery_fraction: Number | None  # None: the parent's training tokens are unknown
    from_variant: str


class PlanOption(Strict):
    """One recipe's answer: the model to train, its loss after the recipe and its device cost."""

    recipe: str
    status: str
    reason: str | None = None
    note: str | None = None
    plan: PlanForTarget | None = None
    degradation_bpb: DegradationAt | None = None
    predicted_loss_bpb: Number | None = None
    predicted_loss_bpb_interval: list[Number | None] | None = None
    recovery_tokens: Number | None = None
    training_flops: Number | None = None
    deployed_params: Number | None = None
    recipe_scale: RecipeScale | None = None
    device: DeviceCost | None = None
    meets_limits: bool | None = None


class VariantPick(Strict):
    """A variant meets the target within the limits (``status: ok``)."""

    status: Literal["ok"]
    loss_target_bpb: Number
    device: str
    cost_axis: str
    cost_label: str
    limits: PickLimits
    runs: list[str]
    considered: dict[str, str] = Field(description="variant → why it does not qualify, or 'qualifies'")
    variant: PickedVariant
    cheaper_miss: NearestMiss | None = Field(
        None, description="the closest of the cheaper variants that miss the loss target (what the pick beats)"
    )


class NearestMiss(Strict):
    """The variant closest to the target from above, when none meets it."""

    variant_id: str
    run: str | None
    validation_bpb: Number
    miss_bpb: Number
    validation_se_bpb: Number | None = Field(None, description="standard error of validation_bpb (older runs: none)")


class NewModelPick(Strict):
    """No variant qualifies: the model the law says to train (``plan``), why none would (``infeasible``),
    or, when the run's law is not identified, the sizes and tokens to train to find out (``unidentified``)."""

    loss_target_bpb: Number
    device: str
    cost_axis: str
    cost_label: str
    limits: PickLimits
    runs: list[str]
    considered: dict[str, str]
    any_variant_fits_memory: bool
    memory_note: str | None = None
    nearest_miss: NearestMiss | None = None
    status: Literal["plan", "infeasible", "unidentified"]
    law: LawInfo
    options: list[PlanOption]
    served_tokens: Number
    best_by: str
    best: PlanOption | None = None
    identify_with: dict[str, Any] | None = None  # status unidentified: edgescale.scaling.plan.data_to_identify
    reason: str


Pick = Annotated[VariantPick | NewModelPick, Field(discriminator="status")]


# -- the recipe comparison (edgescale.report.compare.compare) ---------------------------------


class TwinRow(Strict):
    size: str
    train_tokens: Number
    validation_bpb: Number | None
    test_bpb: Number | None
    pruned_minus_scratch_val_bpb: Number | None
    verdict: str | None


class CompareRow(Strict):
    recipe: str
    variant_id: str
    params_total: Number
    validation_bpb: Number | None
    test_bpb: Number | None
    validation_se_bpb: Number | None = Field(None, description="standard error of validation_bpb (older runs: none)")
    test_se_bpb: Number | None = Field(None, description="standard error of test_bpb (older runs: none)")
    delta_validation_bpb: Number | None
    delta_test_bpb: Number | None
    host_decode_speedup: Speedup | None
    host_prefill_speedup: Speedup | None
    device_latency: DeviceLatency | None
    device_decode_speedup_predicted: Number | None
    file_bytes: Number
    file_ratio: Number | None
    bytes_per_decoded_token: Number
    bytes_ratio: Number | None
    on_frontier: bool
    flags: list[str]
    scratch_twin: TwinRow | None


class CompareTable(Strict):
    size: str
    params_total: Number
    rows: list[CompareRow]


class Comparison(Strict):
    """Every recipe against the baseline recipe of the same size."""

    baseline: str
    device: str
    frontier_axis: str
    frontier_label: str
    speedup: str = Field(description="how the speed-ups were measured")
    loss_unit: str
    sizes: list[CompareTable]


# -- the two training routes (edgescale.report.routes.routes) ---------------------------------


class TrainingFlops(Strict):
    pretrain: Number
    teacher: Number
    teacher_forward: Number
    recovery: Number
    total: Number


class ScratchEquivalent(Strict):
    params_total: Number
    tokens_at_same_compute: Number | None
    loss_bpb_at_same_compute: Number | None
    tokens_to_target: Number | None = None
    compute_to_target: Number | None = None


class ScratchTwinMeasured(Strict):
    validation_bpb: Number | None
    validation_se_bpb: Number | None = None
    training_flops: Number


class RoutePoint(Strict):
    """A frontier variant's training compute and the law's scratch model at its inference cost."""

    variant_id: str
    validation_bpb: Number | None
    validation_se_bpb: Number | None = None
    params_total: Number
    training_flops: TrainingFlops
    scratch_same_inference_cost: ScratchEquivalent
    scratch_twin_measured: ScratchTwinMeasured | None


class RouteVariant(Strict):
    variant_id: str
    validation_bpb: Number | None
    validation_se_bpb: Number | None = None
    training_flops: Number
    inference_flops: Number
    lifetime_flops: Number
    training_kwh: Number | None = None
    inference_kwh: Number | None = None
    lifetime_kwh: Number | None = None
    lifetime_kwh_low: Number | None = Field(None, description="with the predicted decode interval's low end")
    lifetime_kwh_high: Number | None = None
    interval: str | None = Field(None, description="where the predicted decode interval comes from")


class RoutePair(Strict):
    """A compressed variant against the baseline frontier interpolated in log cost at its cost
    (``edgescale.report.route_pairs``); ``status`` out_of_range: no number, nothing extrapolated."""

    variant_id: str
    axis: str
    axis_label: str
    source: str
    cost: Number | None
    status: Literal["ok", "out_of_range"]
    verdict: str = Field(description="better | worse | tie | unknown (no interval) | out_of_range")
    statement: str
    lower: str | None = Field(None, description="the cheaper bracketing baseline variant")
    upper: str | None = None
    weight_lower: Number | None = Field(None, description="w: the baseline is w·L_lower + (1 − w)·L_upper")
    baseline_bpb: Number | None = None
    variant_bpb: Number | None = None
    delta_bpb: Number | None = Field(None, description="variant − interpolated baseline, validation bits/byte")
    delta_low: Number | None = None
    delta_high: Number | None = None
    interval: str | None = Field(None, description="paired over windows, unpaired from standard errors, or none")
    training_flops: Number | None = None
    baseline_training_flops: Number | None = None
    training_flops_ratio: Number | None = None


class LawRoute(Strict):
    """The law's inference-aware scratch plan for the target (``status`` ok), or why there is none."""

    status: str
    reason: str | None = None
    law: str | None = None
    reliable: bool | None = None
    params_total: Number | None = None
    tokens: Number | None = None
    training_flops: Number | None = None
    inference_flops: Number | None = None
    lifetime_flops: Number | None = None
    training_kwh: Number | None = None
    inference_kwh: Number | None = None
    lifetime_kwh: Number | None = None


class RouteTime(Strict):
    """Measured decode p50, train small / train big and compress (``edgescale.report.route_time``)."""

    by: str
    ratio: Number
    ratio_low: Number | None = None
    ratio_high: Number | None = None
    noise_floor: Number = Field(description="the A/A decode floor: an interval reaching into its band is a tie")
    faster: str | None = Field(None, description="train small | train big and compress | None (a tie, or unknown)")
    uncertainty: str
    statement: str


class DeviceRoutes(Strict):
    train_small: RouteVariant | None
    train_big_and_compress: RouteVariant | None
    law_scratch_plan: LawRoute
    cheaper: str | None
    by: str | None = None
    ratio: Number | None = None
    ratio_low: Number | None = Field(None, description="small/big lifetime cost ratio, 95% low end")
    ratio_high: Number | None = None
    uncertainty: str | None = Field(None, description="what the ratio's interval carries")
    statement: str
    time: RouteTime | None = Field(None, description="measured devices: the decode-time verdict")


class RouteRules(Strict):
    training: str
    inference: str
    same_inference_cost: str
    train_small: str
    train_big_and_compress: str
    pairs: str | None = None


class Routes(Strict):
    served_tokens: Number
    loss_target_bpb: Number | None
    law: LawInfo
    rules: RouteRules
    points: list[RoutePoint]
    pairs: list[RoutePair] | None = Field(None, description="every compressed variant at equal cost, per cost axis")
    per_device: dict[str, DeviceRoutes]
    note: str | None = None


# -- the section ----------------------------------------------------------------------------


class Analysis(Strict):
    """Everything the report says, computed once from the rest of ``results.json``."""

    schema_version: int
    loss_target_bpb: Number | None
    served_tokens: Number | None = None
    note: str | None = None
    devices: list[str] | None = None
    frontiers: dict[str, Frontier] | None = None
    degradation: dict[str, DegradationLaw] | None = None
    picks: dict[str, Pick] | None = None
    compare: Comparison | None = None
    routes: Routes | None = None
    picks_note: str | None = None
