"""The pilot study end to end on a tiny world: both arms per seed, 3D scores from the multi-view aggregation, reuse,
the paired summary and the page; and `ppkt pilot` refuses what it cannot use."""
import pytest

from ppkt.benchmark.pilot import pilot_page, pilot_summary, run_pilot
from ppkt.cli import main as cli_main
from ppkt.synthetic.dataset import write_dataset

pytestmark = pytest.mark.usefixtures("keep_torch_threads")


def test_tiny_pilot(tmp_path, capsys):
    world = write_dataset(tmp_path / "world", scenes=5, frames_per_scene=2, seed=2, workers=1, point_spacing=0.1,
                          progress=False, compact=True)
    results = run_pilot(world, tmp_path / "pilot", seeds=2, iterations=2, batch_size=2)
    assert sorted(results.records) == ["imagenet_s0", "imagenet_s1", "scratch_s0", "scratch_s1"]
    for r in results.records.values():
        assert 0.0 <= r["miou_3d"] <= 1.0 and 0.0 < r["coverage"] <= 1.0 and r["miou_2d"] is not None
    stamps = {k: r["seconds"] for k, r in results.records.items()}
    again = run_pilot(world, tmp_path / "pilot", seeds=2, iterations=2, batch_size=2)  # reused, not retrained
    assert {k: r["seconds"] for k, r in again.records.items()} == stamps
    summary = pilot_summary(again, range(2))
    want = sum(100 * (again.records[f"imagenet_s{s}"]["miou_3d"] - again.records[f"scratch_s{s}"]["miou_3d"])
               for s in (0, 1)) / 2
    assert summary["seeds"] == 2 and summary["miou_3d"]["interval"].mean == pytest.approx(want)
    text = "\n".join(pilot_page(summary, 2))
    assert "| 3D mIoU (val points) | 2 |" in text and "+4.81" in text
    capsys.readouterr()
    assert cli_main(["benchmark", "pilot", "--data", str(world), "--out", str(tmp_path / "pilot"),
                     "--rerun", "imagenet_s1"]) == 0  # one record again from nothing: the same score
    recorded = 100 * again.records["imagenet_s1"]["miou_3d"]
    assert f"imagenet_s1: recorded miou_3d {recorded:.2f}, rerun {recorded:.2f}" in capsys.readouterr().out


def test_pilot_command_refuses_a_folder_that_is_not_a_world(tmp_path, capsys):
    assert cli_main(["benchmark", "pilot", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert "ppkt: error: --data: " in capsys.readouterr().err and not (tmp_path / "out").exists()
