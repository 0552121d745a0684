"""TinyNAS stage 1: search-space optimization, sensitivity, plots and the command line."""
import argparse
import io
from contextlib import redirect_stdout

import numpy as np
import pytest

import nas
from nas import stage1 as ss
from tinyengine_tf.errors import DoesNotFitError
from nas.space import MCUNetSpace

RES, WID = (48, 64, 96, 128), (0.2, 0.4, 0.6)
SRAM, FLASH = 96 * 1024, 400 * 1024


@pytest.fixture(scope="module")
def choice():
    return nas.optimize_search_space(SRAM, FLASH, samples=24, resolutions=RES, widths=WID, seed=3,
                                     workers=2, progress=False)


def test_table_has_one_row_per_configuration(choice):
    assert len(choice.table) == len(RES) * len(WID)
    assert all(c.fast for c in choice.configs)
    assert {(r["resolution"], r["width"]) for r in choice.table} == {(r, w) for r in RES for w in WID}
    for row in choice.table:
        assert 0 <= row["fit_ratio"] <= 1 and row["fit"] == round(row["fit_ratio"] * row["samples"])
        if row["fit"]:
            assert row["mean_peak_sram"] <= SRAM and row["mean_flash"] <= FLASH
            assert row["mean_macs"] > 0 and row["median_macs"] <= row["max_macs"]
        else:
            assert row["mean_macs"] == 0


def test_choice_is_the_largest_mean_macs_that_fits(choice):
    eligible = [r for r in choice.table if r["fit"] and r["fit_ratio"] >= choice.min_fit_ratio]
    assert eligible, "the budgets are meant to let some configurations fit"
    best = max(eligible, key=lambda r: r["mean_macs"])
    assert (choice.resolution, choice.width) == (best["resolution"], best["width"])
    assert choice.best == best
    assert ss._name(choice.resolution, choice.width) in choice.reason and "mean MACs" in choice.reason


def test_table_rows_agree_with_estimate(choice):
    """The fast sweep's verdicts, MACs and costs are nas.estimate's, network for network."""
    cs = next(c for c in choice.configs if (c.resolution, c.width) == (choice.resolution, choice.width))
    space = MCUNetSpace(resolutions=[cs.resolution], widths=[cs.width])
    rng = ss.config_rng(choice.seed, cs.resolution, cs.width)
    fits = cs.fits(SRAM, FLASH)
    for i in range(len(cs.macs)):
        est = nas.estimate(space.sample(cs.resolution, cs.width, rng))
        assert est.macs == cs.macs[i] and est.fits(SRAM, FLASH) == fits[i]
        if fits[i]:
            assert (est.peak_sram, est.flash) == (cs.peak_sram[i], cs.flash[i])


def test_reproducible_and_independent_of_workers(choice):
    again = nas.optimize_search_space(SRAM, FLASH, samples=24, resolutions=RES, widths=WID, seed=3,
                                      workers=1, progress=False)
    assert again.table == choice.table and (again.resolution, again.width) == (choice.resolution, choice.width)
    other = nas.optimize_search_space(SRAM, FLASH, samples=24, resolutions=RES[:2], widths=WID[:1],
                                      seed=4, workers=1, progress=False)
    assert other.configs[0].macs.tolist() != choice.configs[0].macs.tolist()


def test_fast_and_full_pipeline_agree():
    for r, w in ((64, 0.4), (96, 0.6), (128, 0.2)):
        fast = ss.evaluate_config(r, w, 12, 5, SRAM, FLASH)
        full = ss.evaluate_config(r, w, 12, 5, SRAM, FLASH, fast=False)
        assert fast.fast and not full.fast   # the shortcut held (no fallback to the full pipeline)
        assert np.array_equal(fast.macs, full.macs)
        assert np.array_equal(fast.fits(SRAM, FLASH), full.fits(SRAM, FLASH))
        both = (fast.peak_sram >= 0) & (full.peak_sram >= 0)
        assert np.array_equal(fast.peak_sram[both], full.peak_sram[both])


def test_min_fit_ratio_excludes_sparse_spaces(choice):
    rows = choice.table
    strict, why = ss._choose(rows, 1.01)          # nothing qualifies: falls back to any fit
    assert strict is not None and "no configuration had" in why
    loose, _ = ss._choose(rows, 0.0)
    assert loose["mean_macs"] == max(r["mean_macs"] for r in rows if r["fit"])


def test_nothing_fits_raises():
    with pytest.raises(DoesNotFitError) as e:
        nas.optimize_search_space(1000, 1000, samples=3, resolutions=(48,), widths=(0.2,),
                                  workers=1, progress=False)
    assert "budget" in str(e.value) and isinstance(e.value.report, ss.SearchSpaceChoice)
    none = nas.optimize_search_space(1000, 1000, samples=3, resolutions=(48,), widths=(0.2,),
                                     workers=1, progress=False, raise_if_none=False)
    assert none.resolution is None and none.width is None


def test_markdown_and_plot(choice, tmp_path):
    md = choice.to_markdown()
    assert md.count("\n| w") == len(choice.table) and "(chosen)" in md and choice.reason in md
    path = choice.plot(tmp_path / "cdf.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_sensitivity(tmp_path):
    srams, flashes = [64 * 1024, 160 * 1024], [300 * 1024, 700 * 1024]
    sens = nas.sensitivity(srams, flashes, samples=10, resolutions=RES, widths=WID, seed=1,
                           workers=2, progress=False)
    assert len(sens.choices) == 2 and all(len(row) == 2 for row in sens.choices)
    for i, s in enumerate(srams):
        for j, f in enumerate(flashes):
            single = nas.optimize_search_space(s, f, samples=10, resolutions=RES, widths=WID, seed=1,
                                               workers=1, progress=False, raise_if_none=False)
            c = sens.choices[i][j]
            assert (c.resolution, c.width) == (single.resolution, single.width)
    assert sens.grid("resolution").shape == (2, 2)
    assert "| SRAM" in sens.to_markdown()
    assert sens.plot(tmp_path / "heat.png").read_bytes()[:4] == b"\x89PNG"


def test_measure_throughput_reports_rates():
    r = nas.measure_throughput(samples=4, resolutions=(48, 96), widths=(0.3,), workers=1, progress=False)
    assert r["networks"] == 8 and r["networks_per_second"] > 0 and r["networks_per_cpu_second"] > 0
    assert 0 <= r["planned_fraction"] <= 1


# -- command line -------------------------------------------------------------------------------
def _parser():
    import nas.cli
    p = argparse.ArgumentParser(prog="t")
    nas.cli.register(p.add_subparsers(dest="command"))
    return p


def test_cli_space(tmp_path):
    args = _parser().parse_args(["nas", "space", "--sram", "96KB", "--flash", "400KB", "--samples", "6",
                                 "--resolutions", "48,64", "--widths", "0.2,0.4", "--workers", "1",
                                 "--plot", str(tmp_path / "p.png"), "--quiet"])
    assert args.sram == 96 * 1024 and args.flash == 400 * 1024
    out = io.StringIO()
    with redirect_stdout(out):
        assert args.func(args) == 0
    text = out.getvalue()
    assert "chosen: resolution" in text and "| config |" in text
    assert (tmp_path / "p.png").stat().st_size > 0


def test_cli_through_tinyengine_tf(tmp_path, capsys):
    from tinyengine_tf.cli import main
    code = main(["nas", "space", "--sram", "1000", "--flash", "1000", "--samples", "2",
                 "--resolutions", "48", "--widths", "0.2", "--workers", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1 and "error:" in err and "budget" in err
    with pytest.raises(SystemExit):
        _parser().parse_args(["nas", "space", "--sram", "lots", "--flash", "1MB"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["nas", "space", "--sram", "1MB"])   # --flash is required


def test_stage1_with_patches_counts_networks_that_fit_only_with_patches():
    sram, flash = 256 * 1024, 1024 * 1024
    plain = nas.optimize_search_space(sram, flash, samples=4, resolutions=[160], widths=[0.5],
                                      seed=0, workers=1, progress=False, raise_if_none=False)
    cs = ss.evaluate_config(160, 0.5, 4, 0, sram, flash, patches={"max_mac_overhead": 0.2})
    ok = cs.fits(sram, flash)
    base = plain.configs[0].fits(sram, flash)
    # The same networks (same seed); patches only add fits, and exactly the patched ones.
    assert np.array_equal(cs.macs, plain.configs[0].macs)
    assert np.array_equal(ok & ~cs.patched, base) and cs.patched.any() and not (cs.patched & base).any()
    space = MCUNetSpace(resolutions=[160], widths=[0.5])
    rng = ss.config_rng(0, 160, 0.5)
    for i in range(4):
        arch = space.sample(160, 0.5, rng)
        if base[i]:
            continue
        # The compiler's own search (least peak) agrees with the verdict.
        best = nas.estimate(arch, patches="auto", max_mac_overhead=0.2)
        assert (best.peak_sram <= sram) == bool(cs.patched[i])
        if cs.patched[i]:
            assert cs.peak_sram[i] <= sram and cs.extra_macs[i] <= 0.2 * cs.macs[i]
