"""Tests of the synthetic generator's realism effects and profiles (``hieseg.synthesis.effects``
wired into ``hieseg.synthesis.generator.make_case``).

Each effect is checked alone (``RealismProfile.only``) against the basic twin of the same seed:
the effects draw from their own random streams, so the twin has the same grid, brain and noise
and the difference is the effect. Also: "basic" reproduces the cases made before the effects
existed bit for bit, every profile keeps the release's conventions, the shifted profile's
held-out ranges never overlap the training ones, and the command line's ``--profile``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from hieseg.cli.synthetic import main
from hieseg.io.images import Geometry, read_image, to_xyz_array
from hieseg.io.layout import adc_path, label_path, zadc_path
from hieseg.synthesis import effects as fx
from hieseg.synthesis.effects import (
    HELD_OUT,
    HELD_OUT_EFFECTS,
    PROFILES,
    RANDOMISED,
    SHIFTED,
)
from hieseg.synthesis.generator import (
    SyntheticCase,
    TissueClass,
    case_seed,
    make_case,
    release_case_id,
)

SIZE = (96, 96, 24)
TINY = (48, 48, 12)

BASIC_REFERENCES = [(3, (64, 64, 16), None), (11, (96, 96, 24), 0.03), (7, (48, 48, 12), 0.0)]
"""Cases made by the generator before the realism effects existed (commit 5b4b4ac~1), kept as arrays in
test/data/basic_seed<seed>.npz: "basic" must reproduce them. Compared within float tolerance, because the
last bits of numpy's and scipy's float32 maths differ between CPUs (a SHA-256 of the bytes matched one
machine and not another), while a real change of the generator changes most voxels."""
SAME_VOXELS = 0.999
"""Share of voxels that must agree: a handful may flip where a float lands on the other side of a threshold."""
DATA = Path(__file__).resolve().parent / "data"


def arrays(case: SyntheticCase) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z) arrays of ADC, Z_ADC and the boolean lesion mask."""
    return to_xyz_array(case.adc), to_xyz_array(case.zadc), to_xyz_array(case.label, np.uint8) > 0


def digest(case: SyntheticCase) -> str:
    sha = hashlib.sha256()
    for image in (case.adc, case.zadc, case.label):
        sha.update(sitk.GetArrayViewFromImage(image).tobytes())
    sha.update(case.tissue.tobytes())
    return sha.hexdigest()


def with_twin(
    effect: str, seed: int, profile: fx.RealismProfile = RANDOMISED, **kwargs: object
) -> tuple[SyntheticCase, SyntheticCase]:
    """A case with only ``effect`` switched on, and its basic twin of the same seed."""
    case = make_case("E", seed, size=SIZE, profile=profile.only(effect), **kwargs)
    twin = make_case("E", seed, size=SIZE, **kwargs)
    return case, twin


def disjoint(first: fx.Ranges, second: fx.Ranges) -> bool:
    return all(high_a < low_b or high_b < low_a for low_a, high_a in first for low_b, high_b in second)


def inside(value: float, ranges: fx.Ranges) -> bool:
    return any(low <= value <= high for low, high in ranges)


def agreement(case: SyntheticCase, reference: np.lib.npyio.NpzFile) -> dict[str, float]:
    """Per array, the share of the brain voxels (of either) equal to the reference's, within float tolerance."""
    arrays = {"adc": sitk.GetArrayViewFromImage(case.adc), "zadc": sitk.GetArrayViewFromImage(case.zadc),
              "label": sitk.GetArrayViewFromImage(case.label), "tissue": case.tissue.transpose(2, 1, 0)}
    expected = {name: reference[name] for name in ("adc", "zadc", "label")}
    expected["tissue"] = reference["tissue"].transpose(2, 1, 0)
    brain = (arrays["adc"] > 0) | (expected["adc"] > 0)
    return {name: float(np.mean(np.isclose(array, expected[name], rtol=1e-5, atol=1e-4)[brain]))
            for name, array in arrays.items()}


@pytest.mark.parametrize(("seed", "size", "burden"), BASIC_REFERENCES)
def test_basic_profile_reproduces_the_cases_made_before_the_effects(seed, size, burden):
    reference = np.load(DATA / f"basic_seed{seed}.npz")
    default = make_case("C", seed, size=size, lesion_burden=burden)
    assert all(share >= SAME_VOXELS for share in agreement(default, reference).values()), agreement(default, reference)
    assert default.profile == "basic" and default.effects == {}
    for profile in ("basic", RANDOMISED.only()):
        again = make_case("C", seed, size=size, lesion_burden=burden, profile=profile)
        assert digest(again) == digest(default)


def test_a_changed_generator_is_told_from_the_reference() -> None:
    reference = np.load(DATA / "basic_seed3.npz")
    other_seed = make_case("C", 4, size=(64, 64, 16))
    assert min(agreement(other_seed, reference).values()) < 0.9


def test_profiles_are_deterministic_and_keep_the_basic_twins_grid():
    basic = make_case("D", 4, size=SIZE)
    for profile in ("randomised", "shifted"):
        first, again = (make_case("D", 4, size=SIZE, profile=profile) for _ in range(2))
        for one, other in zip(arrays(first), arrays(again)):
            assert np.array_equal(one, other)
        assert first.effects == again.effects and first.profile == profile
        assert Geometry.of(first.adc) == Geometry.of(basic.adc)
        assert not np.array_equal(arrays(first)[1], arrays(basic)[1])
    with pytest.raises(ValueError, match="unknown profile"):
        make_case("D", 4, size=SIZE, profile="hard")
    with pytest.raises(ValueError, match="unknown effect"):
        RANDOMISED.only("gremlins")


@pytest.mark.parametrize("profile", ["randomised", "shifted", "accurate-atlas"])
def test_every_profile_keeps_the_release_conventions(profile):
    for seed in range(5):
        case = make_case("I", seed, size=SIZE, profile=profile)
        adc, zadc, lesion = arrays(case)
        brain = adc > 0
        assert case.adc.GetPixelID() == sitk.sitkFloat32 == case.zadc.GetPixelID()
        assert case.label.GetPixelID() == sitk.sitkUInt8
        assert np.isfinite(adc).all() and (adc >= 0).all()
        assert np.array_equal(brain, case.tissue > 0)
        assert np.all(zadc[~brain] == 0) and -10 <= zadc.min() and zadc.max() <= 10
        assert set(np.unique(to_xyz_array(case.label, np.uint8))) <= {0, 1}
        assert not (lesion & ~brain).any()


def test_normative_misregistration_errs_at_tissue_edges_and_leaves_the_adc_alone():
    only = RANDOMISED.only("normative")
    no_bias = dataclasses.replace(
        only,
        normative=dataclasses.replace(
            only.normative, regional_bias_z=((0.0, 0.0),), global_offset_z=((0.0, 0.0),), std_scale=((1.0, 1.0),)
        ),
    )
    case = make_case("N", 3, size=SIZE, lesion_burden=0.0, profile=no_bias)
    twin = make_case("N", 3, size=SIZE, lesion_burden=0.0)
    adc, zadc, _ = arrays(case)
    twin_adc, twin_z, _ = arrays(twin)
    assert np.array_equal(adc, twin_adc)
    tissue = case.tissue
    edge = np.zeros(tissue.shape, dtype=bool)
    for axis in range(3):
        step = np.diff(tissue.astype(np.int16), axis=axis) != 0
        edge |= np.concatenate([step, np.zeros_like(step.take([0], axis=axis))], axis=axis)
        edge |= np.concatenate([np.zeros_like(step.take([0], axis=axis)), step], axis=axis)
    near_edge = edge & (tissue > 0)
    error = np.abs(zadc - twin_z)
    far = (tissue > 0) & ~near_edge
    assert error[near_edge].mean() > 0.3
    assert error[near_edge].mean() > 3 * error[far].mean()


def test_normative_offset_moves_z_without_knowing_it():
    only = RANDOMISED.only("normative")
    offset_only = dataclasses.replace(
        only,
        normative=dataclasses.replace(
            only.normative,
            misregistration_mm=((0.0, 0.0),),
            warp_mm=((0.0, 0.0),),
            regional_bias_z=((0.0, 0.0),),
            global_offset_z=((0.5, 0.5),),
            std_scale=((1.0, 1.0),),
        ),
    )
    case = make_case("O", 1, size=SIZE, lesion_burden=0.0, profile=offset_only)
    twin = make_case("O", 1, size=SIZE, lesion_burden=0.0)
    _, zadc, _ = arrays(case)
    twin_z = arrays(twin)[1]
    white_matter = twin.tissue == TissueClass.WHITE_MATTER
    offset = case.effects["normative"]["global_offset_z"]
    assert abs(offset) == 0.5
    assert np.median(zadc[white_matter] - twin_z[white_matter]) == pytest.approx(offset, abs=0.05)


def test_scaled_atlas_error_shrinks_every_error_towards_an_exact_atlas():
    drawn = {"misregistration_mm": 2.0, "warp_mm": 0.8, "regional_bias_z": 0.6, "global_offset_z": -0.4,
             "std_scale": 1.2}
    scaled = fx.scaled_atlas_error(drawn, 0.25)
    assert scaled == pytest.approx({"misregistration_mm": 0.5, "warp_mm": 0.2, "regional_bias_z": 0.15,
                                    "global_offset_z": -0.1, "std_scale": 1.05})
    assert fx.scaled_atlas_error(drawn, 0.0)["std_scale"] == 1.0
    assert drawn["misregistration_mm"] == 2.0


def test_accurate_atlas_brings_z_close_to_the_exact_atlas_and_leaves_the_adc_alone():
    seed = 4
    imperfect = make_case("A", seed, size=SIZE, lesion_burden=0.0, profile=RANDOMISED.only("normative"))
    accurate = make_case("A", seed, size=SIZE, lesion_burden=0.0,
                         profile=RANDOMISED.only("normative", "accurate_atlas"))
    exact = make_case("A", seed, size=SIZE, lesion_burden=0.0)
    (adc, z_accurate, _), (imperfect_adc, z_imperfect, _), (_, z_exact, _) = (
        arrays(accurate), arrays(imperfect), arrays(exact))
    assert np.array_equal(adc, imperfect_adc)
    assert accurate.effects["normative"] == imperfect.effects["normative"]
    assert 0.0 <= accurate.effects["accurate_atlas"]["error_scale"] <= 0.25
    brain = adc > 0
    error_accurate = np.abs(z_accurate - z_exact)[brain].mean()
    error_imperfect = np.abs(z_imperfect - z_exact)[brain].mean()
    assert error_accurate < 0.35 * error_imperfect
    alone = make_case("A", seed, size=TINY, profile=RANDOMISED.only("accurate_atlas"))
    assert "accurate_atlas" in alone.effects
    assert np.array_equal(arrays(alone)[1], arrays(make_case("A", seed, size=TINY))[1])


def test_accurate_atlas_profile_is_the_randomised_cases_with_a_near_exact_normative_model():
    drawn_profile = RANDOMISED.without("accurate_atlas")
    accurate_z_errors, drawn_z_errors = [], []
    for seed in (2, 5):
        accurate = make_case("P", seed, size=SIZE, profile="accurate-atlas")
        drawn = make_case("P", seed, size=SIZE, profile=drawn_profile)
        exact = make_case("P", seed, size=SIZE, profile=drawn_profile.without("normative"))
        (adc, z_accurate, label), (drawn_adc, z_drawn, drawn_label) = arrays(accurate), arrays(drawn)
        assert np.array_equal(adc, drawn_adc) and np.array_equal(label, drawn_label)
        assert set(accurate.effects) == set(drawn.effects)
        z_exact = arrays(exact)[1]
        brain = adc > 0
        accurate_z_errors.append(np.abs(z_accurate - z_exact)[brain].mean())
        drawn_z_errors.append(np.abs(z_drawn - z_exact)[brain].mean())
    assert max(accurate_z_errors) < 0.35 * min(drawn_z_errors)


def test_cerebellum_and_brainstem_add_inferior_posterior_brain_that_is_never_lesioned():
    case, twin = with_twin("hindbrain", 5, lesion_burden=0.05)
    adc, _, lesion = arrays(case)
    twin_brain = arrays(twin)[0] > 0
    brain = adc > 0
    added = brain & ~twin_brain
    assert not (twin_brain & ~brain).any()
    assert added.sum() > 0.03 * twin_brain.sum()
    centre, added_centre = np.argwhere(twin_brain).mean(axis=0), np.argwhere(added).mean(axis=0)
    assert added_centre[2] < centre[2] and added_centre[1] > centre[1]
    cerebellum, brainstem = case.tissue == TissueClass.CEREBELLUM, case.tissue == TissueClass.BRAINSTEM
    assert cerebellum.sum() > 100 and brainstem.sum() > 50
    assert not (lesion & (cerebellum | brainstem)).any() and lesion.any()
    assert 1000 < np.median(adc[cerebellum]) < 1400 and 900 < np.median(adc[brainstem]) < 1300
    assert (case.tissue[:, :, 0] == TissueClass.BRAINSTEM).any(), "the crop reaches the field of view's end"
    assert np.argwhere(cerebellum).mean(axis=0)[1] > np.argwhere(brainstem).mean(axis=0)[1]


def test_susceptibility_darkens_the_skull_base_outside_the_label():
    for seed in (0, 5):
        case, twin = with_twin("susceptibility", seed, lesion_burden=0.02)
        adc, zadc, lesion = arrays(case)
        twin_adc, twin_z, twin_lesion = arrays(twin)
        assert np.array_equal(lesion, twin_lesion)
        darker = adc < twin_adc - 300
        assert darker.sum() >= 5 and not (darker & lesion).any()
        assert np.argwhere(darker).mean(axis=0)[2] < np.argwhere(adc > 0).mean(axis=0)[2]
        assert ((zadc < -2) & darker).sum() >= 5
        assert ((zadc < -2) & ~lesion).sum() > ((twin_z < -2) & ~lesion).sum()


def test_blood_products_are_small_dark_blobs_outside_the_label_in_the_shifted_profile_only():
    assert RANDOMISED.blood.probability == 0 < SHIFTED.blood.probability
    case, twin = with_twin("blood", 2, profile=SHIFTED, lesion_burden=0.02)
    adc, zadc, lesion = arrays(case)
    twin_adc, twin_z, twin_lesion = arrays(twin)
    assert np.array_equal(lesion, twin_lesion)
    darker = adc < twin_adc - 300
    assert darker.any() and not (darker & lesion).any()
    assert adc[darker].min() < 700
    assert ((zadc < -2) & ~lesion).sum() > ((twin_z < -2) & ~lesion).sum()


def test_faint_lesions_read_mildly_negative_z():
    for seed in range(4):
        case, twin = with_twin("faint", seed, lesion_burden=0.03)
        adc, zadc, lesion = arrays(case)
        twin_adc, twin_z, twin_lesion = arrays(twin)
        assert np.array_equal(lesion, twin_lesion) and lesion.any()
        assert -3.0 <= np.median(zadc[lesion]) <= -1.5
        assert np.median(twin_z[lesion]) < -3.0
        assert np.median(adc[lesion]) > np.median(twin_adc[lesion])


def test_small_lesions_replace_the_default_burden_with_a_punctate_one():
    for seed in range(3):
        case = make_case("S", seed, size=SIZE, profile=RANDOMISED.only("small_lesions"))
        burden = case.effects["small_lesions"]["burden"]
        assert 0.00002 <= burden <= 0.002 and 2 <= case.effects["small_lesions"]["blobs"] <= 10
        adc, _, lesion = arrays(case)
        assert lesion.sum() == max(1, round(burden * np.count_nonzero(adc > 0)))
    explicit = make_case("S", 0, size=SIZE, lesion_burden=0.03, profile=RANDOMISED.only("small_lesions"))
    assert "small_lesions" not in explicit.effects  # an explicit burden wins


def test_mild_lesions_read_a_fraction_of_their_tissues_normal_adc():
    every_blob = dataclasses.replace(RANDOMISED, mild_lesions=dataclasses.replace(RANDOMISED.mild_lesions,
                                                                                  blob_probability=1.0))
    for seed in range(3):
        case, twin = with_twin("mild_lesions", seed, profile=every_blob, lesion_burden=0.03)
        healthy = make_case("E", seed, size=SIZE, lesion_burden=0.0)
        adc, _, lesion = arrays(case)
        twin_adc, _, twin_lesion = arrays(twin)
        normal_adc, _, _ = arrays(healthy)
        assert np.array_equal(lesion, twin_lesion) and lesion.any()
        ratio = np.median(adc[lesion]) / np.median(normal_adc[lesion])
        assert 0.55 * 0.9 <= ratio <= 0.8 * 1.1
        assert np.median(adc[lesion]) != np.median(twin_adc[lesion])


def test_internal_capsule_reads_lower_adc_than_white_matter_and_mildly_negative_z():
    case, _ = with_twin("myelination", 1, lesion_burden=0.0)
    adc, zadc, lesion = arrays(case)
    capsule = case.tissue == TissueClass.INTERNAL_CAPSULE
    white_matter = case.tissue == TissueClass.WHITE_MATTER
    assert capsule.sum() > 20 and not lesion.any()
    assert np.median(adc[capsule]) < np.median(adc[white_matter]) - 200
    assert -2.6 <= np.median(zadc[capsule]) <= -0.8
    assert np.median(zadc[capsule]) < np.median(zadc[white_matter]) - 0.8


def test_site_scale_multiplies_the_adc_and_the_normative_model_does_not_know_it():
    for seed in (0, 2):
        case, twin = with_twin("site", seed, lesion_burden=0.0)
        adc, zadc, _ = arrays(case)
        twin_adc, twin_z, _ = arrays(twin)
        brain = adc > 0
        scale = case.effects["site"]["adc_scale"]
        assert inside(scale, RANDOMISED.site.adc_scale)
        assert np.median(adc[brain] / twin_adc[brain]) == pytest.approx(scale, abs=0.01)
        shift = np.median(zadc[brain] - twin_z[brain])
        assert abs(shift) > 0.2 and np.sign(shift) == np.sign(scale - 1.0)


def test_leftover_rim_adds_non_brain_voxels_outside_the_twins_brain():
    case, twin = with_twin("rim", 2, lesion_burden=0.02)
    adc, zadc, lesion = arrays(case)
    twin_brain = arrays(twin)[0] > 0
    added = (adc > 0) & ~twin_brain
    assert added.sum() > 50 and not (twin_brain & ~(adc > 0)).any()
    assert np.array_equal(added, case.tissue == TissueClass.NON_BRAIN)
    assert not (lesion & added).any()
    assert 500 < np.median(adc[added]) < 2100
    assert np.median(zadc[added]) < -2


def test_cut_removes_a_cap_with_its_label():
    for seed in (0, 1, 4):
        case, twin = with_twin("cut", seed, lesion_burden=0.2)
        adc, zadc, lesion = arrays(case)
        twin_brain, twin_lesion = arrays(twin)[0] > 0, arrays(twin)[2]
        brain = adc > 0
        removed = twin_brain & ~brain
        assert removed.sum() > 20 and not (brain & ~twin_brain).any()
        assert np.all(zadc[removed] == 0) and not lesion[removed].any()
        assert np.array_equal(lesion, twin_lesion & brain)
        axis, sign = (2, 1) if case.effects["cut"]["side"] == "top" else (1, -1)
        kept_extreme = (sign * np.argwhere(brain)[:, axis]).max()
        assert (sign * np.argwhere(removed)[:, axis]).mean() > (sign * np.argwhere(twin_brain)[:, axis]).mean()
        assert (sign * np.argwhere(removed)[:, axis]).max() >= kept_extreme


def test_motion_shifts_interleaved_slices_and_scales_each_slice():
    case, twin = with_twin("motion", 3, lesion_burden=0.02)
    adc, _, lesion = arrays(case)
    twin_adc, _, twin_lesion = arrays(twin)
    brain, twin_brain = adc > 0, twin_adc > 0
    dx, dy = fx.interleaved_offsets(case.effects["motion"], np.asarray(case.adc.GetSpacing()))
    for k in range(adc.shape[2]):
        expected = twin_brain[:, :, k]
        if k % 2 == 1:
            expected = np.roll(expected, (dx, dy), axis=(0, 1))
        assert np.array_equal(brain[:, :, k], expected), k
    even = [k for k in range(0, adc.shape[2], 2) if brain[:, :, k].sum() > 100]
    ratios = [np.median(adc[:, :, k][brain[:, :, k]] / twin_adc[:, :, k][brain[:, :, k]]) for k in even]
    amplitude = case.effects["motion"]["slice_scaling"]
    assert np.std(ratios) > amplitude / 4 and np.all(np.abs(np.array(ratios) - 1) <= amplitude + 0.01)
    assert lesion.sum() == twin_lesion.sum()


def test_ghosting_adds_a_half_field_of_view_copy_in_the_shifted_profile_only():
    assert RANDOMISED.ghosting.probability == 0 < SHIFTED.ghosting.probability
    case, twin = with_twin("ghosting", 3, profile=SHIFTED, lesion_burden=0.02)
    adc = arrays(case)[0]
    twin_adc = arrays(twin)[0]
    brain = adc > 0
    assert np.array_equal(brain, twin_adc > 0)
    axis, amplitude = case.effects["ghosting"]["axis"], case.effects["ghosting"]["amplitude"]
    assert axis == 1 and inside(amplitude, SHIFTED.ghosting.amplitude)
    half_fov_copy = np.roll(twin_adc, twin_adc.shape[axis] // 2, axis=axis)
    overlap = brain & (half_fov_copy > 0)
    assert overlap.sum() > 100
    difference = adc - twin_adc
    assert np.corrcoef(difference[overlap], half_fov_copy[overlap])[0, 1] > 0.99
    assert np.allclose(difference[overlap], amplitude * half_fov_copy[overlap], rtol=1e-4, atol=0.05)
    scalp_ghost = brain & ~overlap & (difference != 0)
    assert np.allclose(difference[scalp_ghost], amplitude * fx.GHOST_SCALP_LEVEL, rtol=1e-3)
    assert np.all(adc[~brain] == 0)


def test_effect_rates_follow_the_profiles_and_lesion_free_cases_have_empty_labels():
    for profile in (RANDOMISED, SHIFTED):
        counts = dict.fromkeys(fx.EFFECTS, 0)
        for seed in range(1500):
            streams = np.random.SeedSequence(seed).spawn(fx.BASIC_STREAMS + len(fx.EFFECTS))
            for name in fx.switch_on(profile, streams[fx.BASIC_STREAMS :]):
                counts[name] += 1
        for name, probability in profile.probabilities().items():
            assert counts[name] / 1500 == pytest.approx(probability, abs=0.04), name
    empty = []
    for seed in range(30):
        case = make_case("L", seed, size=TINY, profile="randomised")
        empty.append(not arrays(case)[2].any())
        if "lesion_free" in case.effects:
            assert empty[-1]
    assert 0 < np.mean(empty) <= 0.3
    forced = make_case("L", 0, size=TINY, profile=RANDOMISED.only("lesion_free"))
    assert not arrays(forced)[2].any() and "lesion_free" in forced.effects
    given = make_case("L", 0, size=TINY, lesion_burden=0.05, profile=RANDOMISED.only("lesion_free"))
    assert arrays(given)[2].any() and "lesion_free" not in given.effects


def test_shifted_profile_holds_out_ranges_and_artefacts_the_training_profile_never_uses():
    for effect, parameter in HELD_OUT:
        trained, held_out = (getattr(getattr(p, effect), parameter) for p in (RANDOMISED, SHIFTED))
        assert disjoint(trained, held_out), (effect, parameter)
    for effect in HELD_OUT_EFFECTS:
        assert RANDOMISED.probabilities()[effect] == 0 < SHIFTED.probabilities()[effect]
    for seed in range(200):
        for profile, expected_inside in ((RANDOMISED, True), (SHIFTED, False)):
            streams = np.random.SeedSequence(seed).spawn(fx.BASIC_STREAMS + len(fx.EFFECTS))
            active = fx.switch_on(profile, streams[fx.BASIC_STREAMS :])
            for effect, parameter in HELD_OUT:
                if effect in active:
                    value = abs(active[effect].params[parameter])
                    assert inside(value, getattr(getattr(RANDOMISED, effect), parameter)) == expected_inside
    differing = [name for name in fx.EFFECTS if getattr(RANDOMISED, name) != getattr(SHIFTED, name)]
    assert set(differing) >= {"site", "normative", "blood", "ghosting"}


def test_cli_profile_defaults_to_randomised_and_is_documented(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--profile" in help_text and "shifted" in help_text and "default randomised" in help_text
    size = [str(n) for n in TINY]
    assert main(["--out", str(tmp_path / "default"), "--cases", "2", "--seed", "9", "--size", *size]) == 0
    basic_args = ["--out", str(tmp_path / "basic"), "--cases", "1", "--seed", "9", "--size", *size]
    basic_args += ["--profile", "basic"]
    assert main(basic_args) == 0
    for folder, profile in (("default", "randomised"), ("basic", "basic")):
        expected = make_case(release_case_id(0), case_seed(9, 0), size=TINY, profile=profile)
        written = read_image(adc_path(tmp_path / folder, expected.case_id))
        assert np.array_equal(to_xyz_array(written), arrays(expected)[0])
    label = read_image(label_path(tmp_path / "default", release_case_id(1)))
    expected = make_case(release_case_id(1), case_seed(9, 1), size=TINY, profile="randomised")
    assert np.array_equal(to_xyz_array(label, np.uint8) > 0, arrays(expected)[2])
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "bad"), "--cases", "1", "--profile", "hard"])
    assert set(PROFILES) == {"basic", "randomised", "shifted", "accurate-atlas"}


def test_cli_without_switches_effects_off_and_keeps_every_other_draw(tmp_path, capsys):
    size = [str(n) for n in TINY]
    common = ["--cases", "3", "--seed", "5", "--size", *size]
    assert main(["--out", str(tmp_path / "all"), *common]) == 0
    assert main(["--out", str(tmp_path / "less"), *common, "--without", "accurate_atlas", "--without", "motion"]) == 0
    assert "randomised-accurate_atlas-motion profile" in capsys.readouterr().out
    profile = RANDOMISED.without("accurate_atlas", "motion")
    switched_off = [set(make_case(release_case_id(i), case_seed(5, i), size=TINY, profile=RANDOMISED).effects)
                    & {"accurate_atlas", "motion"} for i in range(3)]
    assert any(switched_off), "no case of this seed draws either effect: the check below would prove nothing"
    for index in range(3):
        case_id = release_case_id(index)
        expected = make_case(case_id, case_seed(5, index), size=TINY, profile=profile)
        written_adc = to_xyz_array(read_image(adc_path(tmp_path / "less", case_id)))
        written_z = to_xyz_array(read_image(zadc_path(tmp_path / "less", case_id)))
        assert np.array_equal(written_adc, arrays(expected)[0])
        assert np.array_equal(written_z, arrays(expected)[1])
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "bad"), *common, "--without", "no_such_effect"])
    assert exit_info.value.code == 2
    assert "no_such_effect" in capsys.readouterr().err

