"""RGB-D frame readers (7-Scenes and ScanNet layouts) and input validation, on the bundled real frames."""
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ppkt.data.frames import FrameError, FrameFolder, RGBDFrame, find_frame_folders, open_frame_folder

DATA = Path(__file__).resolve().parents[2] / "data" / "7scenes-redkitchen"
K_7SCENES = np.array([[585.0, 0, 320], [0, 585, 240], [0, 0, 1]])
SCANNET_COLOR_HW = (968, 1296)


# ------------------------------------------------------------------------------------ fixture helpers
def make_7scenes(dst: Path, ids=("000000", "000050", "000100")) -> Path:
    """Copy a few bundled frames into a 7-Scenes layout folder."""
    dst.mkdir(parents=True)
    shutil.copy(DATA / "camera-intrinsics.txt", dst)
    for i in ids:
        for suffix in ("color.jpg", "depth.png", "pose.txt"):
            shutil.copy(DATA / f"frame-{i}.{suffix}", dst)
    return dst


def _write_4x4(path: Path, m: np.ndarray) -> None:
    full = np.eye(4)
    full[: m.shape[0], : m.shape[1]] = m
    np.savetxt(path, full)


def make_scannet(dst: Path, ids=("000000", "000050", "000100"), upscale=True) -> Path:
    """ScanNet exported-frame layout from bundled frames: color optionally upscaled to 1296x968."""
    for sub in ("color", "depth", "pose", "intrinsic"):
        (dst / sub).mkdir(parents=True)
    K_color = K_7SCENES.copy()
    if upscale:
        # PIL's resize maps pixel centres as x_c + 0.5 = s (x + 0.5), so cx_c = s cx + (s - 1) / 2.
        sy, sx = SCANNET_COLOR_HW[0] / 480, SCANNET_COLOR_HW[1] / 640
        K_color[0] = [585 * sx, 0, 320 * sx + (sx - 1) / 2]
        K_color[1] = [0, 585 * sy, 240 * sy + (sy - 1) / 2]
    _write_4x4(dst / "intrinsic" / "intrinsic_color.txt", K_color)
    _write_4x4(dst / "intrinsic" / "intrinsic_depth.txt", K_7SCENES)
    for i in ids:
        n = str(int(i))
        if upscale:
            img = Image.open(DATA / f"frame-{i}.color.jpg")
            img.resize(SCANNET_COLOR_HW[::-1], Image.BILINEAR).save(dst / "color" / f"{n}.jpg", quality=95)
        else:
            shutil.copy(DATA / f"frame-{i}.color.jpg", dst / "color" / f"{n}.jpg")
        shutil.copy(DATA / f"frame-{i}.depth.png", dst / "depth" / f"{n}.png")
        shutil.copy(DATA / f"frame-{i}.pose.txt", dst / "pose" / f"{n}.txt")
    return dst


def raises_naming(path, match=None):
    """pytest.raises(FrameError) whose message names the file ``path``."""
    return pytest.raises(FrameError, match=r"(?s)" + re.escape(str(path)) + (f".*{match}" if match else ""))


# ------------------------------------------------------------------------------------------ readers
def test_reads_bundled_7scenes_folder():
    frames = open_frame_folder(DATA)
    assert isinstance(frames, FrameFolder) and frames.layout == "7scenes" and len(frames) == 20
    assert frames.names[:3] == ["000000", "000050", "000100"] and frames.names[-1] == "000950"
    for f in frames:
        assert f.color.shape == (480, 640, 3) and f.color.dtype == np.uint8
        assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
        valid = f.depth[f.depth > 0]
        assert valid.size > 0.5 * f.depth.size and 0.5 < valid.min() and valid.max() < 4.0
        assert f.intrinsics.dtype == np.float64
        np.testing.assert_array_equal(f.intrinsics, K_7SCENES)
        assert f.pose.shape == (4, 4) and f.pose.dtype == np.float64
        np.testing.assert_allclose(f.pose[:3, :3] @ f.pose[:3, :3].T, np.eye(3), atol=1e-3)
        assert "frame-" in f.source
    raw = np.asarray(Image.open(DATA / "frame-000000.depth.png"))
    np.testing.assert_allclose(frames[0].depth, raw / 1000.0, rtol=1e-6)  # mm -> m
    assert frames[-1].source == frames[19].source
    assert len(frames[2:5]) == 3
    with pytest.raises(IndexError):
        frames[20]


def test_stride_and_depth_options():
    frames = open_frame_folder(DATA, stride=5)
    assert frames.names == ["000000", "000250", "000500", "000750"] and len(frames) == 4
    near = open_frame_folder(DATA, stride=20, max_depth=1.5)[0].depth
    assert near.max() <= 1.5 and (near > 0).any()
    cm = open_frame_folder(DATA, stride=20, depth_scale=100.0)[0].depth  # mm read as cm: 10x farther
    full = open_frame_folder(DATA, stride=20, max_depth=None)[0].depth
    np.testing.assert_allclose(cm[cm > 0], full[cm > 0] * 10, rtol=1e-5)
    with pytest.raises(ValueError, match="stride"):
        open_frame_folder(DATA, stride=0)


def test_scannet_layout_resamples_color_to_depth(tmp_path):
    root = make_scannet(tmp_path / "scene0000_00")
    frames = open_frame_folder(root)  # auto
    assert frames.layout == "scannet" and frames.names == ["0", "50", "100"]
    ref = open_frame_folder(DATA, stride=1)
    for k in range(3):
        f, r = frames[k], ref[k]
        assert f.color.shape == (480, 640, 3) and f.color.dtype == np.uint8
        np.testing.assert_array_equal(f.depth, r.depth)
        np.testing.assert_array_equal(f.intrinsics, K_7SCENES)
        np.testing.assert_allclose(f.pose, r.pose)
        diff = np.abs(f.color.astype(np.float32) - r.color.astype(np.float32)).mean()
        assert diff < 2.0, f"resampled color differs from the original by {diff:.2f} grey levels on average"


def test_scannet_same_size_and_k_is_not_resampled(tmp_path):
    root = make_scannet(tmp_path / "scene", ids=("000000",), upscale=False)
    # a K of its own (not the 7-Scenes default), the same in both files: nothing to resample, K read as written
    K = np.array([[571.25, 0, 318.5], [0, 574.75, 243.125], [0, 0, 1]])
    _write_4x4(root / "intrinsic" / "intrinsic_color.txt", K)
    _write_4x4(root / "intrinsic" / "intrinsic_depth.txt", K)
    f = open_frame_folder(root, layout="scannet")[0]
    np.testing.assert_array_equal(f.color, np.asarray(Image.open(DATA / "frame-000000.color.jpg")))
    assert f.intrinsics.shape == (3, 3) and f.intrinsics.dtype == np.float64
    np.testing.assert_array_equal(f.intrinsics, K)
    np.testing.assert_array_equal(f.intrinsics, np.loadtxt(root / "intrinsic" / "intrinsic_depth.txt")[:3, :3])


def test_scannet_ids_sort_numerically(tmp_path):
    root = make_scannet(tmp_path / "scene", ids=("000000", "000050", "000100", "000950"), upscale=False)
    assert open_frame_folder(root).names == ["0", "50", "100", "950"]


def test_find_frame_folders(tmp_path):
    make_scannet(tmp_path / "scans" / "scene0001_00", ids=("000000",), upscale=False)
    make_scannet(tmp_path / "scans" / "scene0000_00", ids=("000000",), upscale=False)
    make_7scenes(tmp_path / "7scenes" / "redkitchen" / "seq-01", ids=("000000",))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not frames")
    found = find_frame_folders(tmp_path)
    assert found == [tmp_path / "7scenes" / "redkitchen" / "seq-01",
                     tmp_path / "scans" / "scene0000_00", tmp_path / "scans" / "scene0001_00"]
    assert [open_frame_folder(p).layout for p in found] == ["7scenes", "scannet", "scannet"]
    assert find_frame_folders(DATA) == [DATA]
    with raises_naming(tmp_path / "notes", "scannet.*7scenes"):
        find_frame_folders(tmp_path / "notes")
    with raises_naming(tmp_path / "notes", "scannet.*7scenes"):
        open_frame_folder(tmp_path / "notes")


def test_poses_absent_everywhere_gives_none(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    for p in root.glob("*.pose.txt"):
        p.unlink()
    frames = open_frame_folder(root)
    assert len(frames) == 3 and all(f.pose is None for f in frames)


# ---------------------------------------------------------------------------------------- bad input
def test_missing_depth_file(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    (root / "frame-000050.depth.png").unlink()
    with raises_naming(root / "frame-000050.depth.png", "missing"):
        open_frame_folder(root)


def test_missing_pose_file_when_others_exist(tmp_path):
    root = make_scannet(tmp_path / "scene", upscale=False)
    (root / "pose" / "50.txt").unlink()
    with raises_naming(Path("pose/50.txt"), "missing"):
        open_frame_folder(root)


def test_truncated_jpeg(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    path = root / "frame-000050.color.jpg"
    path.write_bytes(path.read_bytes()[:5000])
    frames = open_frame_folder(root)
    frames[0]  # the others still read
    with raises_naming(path, "corrupt"):
        frames[1]


def test_not_an_image(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    (root / "frame-000100.depth.png").write_text("hello")
    with raises_naming(root / "frame-000100.depth.png", "corrupt"):
        open_frame_folder(root)[2]


def test_all_zero_depth_file(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    Image.fromarray(np.zeros((480, 640), np.uint16)).save(root / "frame-000000.depth.png")
    with raises_naming(root / "frame-000000.depth.png", "no valid depth"):
        open_frame_folder(root)[0]


def _frame(depth, **kw):
    h, w = depth.shape
    args = dict(color=np.zeros((h, w, 3), np.uint8), depth=depth, intrinsics=K_7SCENES.copy(), pose=np.eye(4),
                source="my_scan/frame-7")
    args.update(kw)
    return RGBDFrame(**args)


def test_all_nan_and_all_zero_depth_in_memory():
    with raises_naming("my_scan/frame-7", "no valid depth"):
        _frame(np.full((4, 5), np.nan, np.float32)).validate()
    with raises_naming("my_scan/frame-7", "no valid depth"):
        _frame(np.zeros((4, 5), np.float32)).validate()


def test_nan_inf_negative_depth_become_zero():
    depth = np.array([[1.0, np.nan], [-2.0, np.inf]], np.float64)
    f = _frame(depth).validate()
    assert f.depth.dtype == np.float32
    np.testing.assert_array_equal(f.depth, [[1.0, 0.0], [0.0, 0.0]])
    assert np.isnan(depth[0, 1])  # the caller's array is left alone


def test_bad_frame_contents_in_memory():
    d = np.ones((4, 5), np.float32)
    with raises_naming("my_scan/frame-7", "size 6x4 does not match depth size 5x4"):
        _frame(d, color=np.zeros((4, 6, 3), np.uint8)).validate()
    with raises_naming("my_scan/frame-7", "uint8"):
        _frame(d, color=np.zeros((4, 5, 3), np.float32)).validate()
    with raises_naming("my_scan/frame-7", "float metres"):
        _frame(np.ones((4, 5), np.uint16)).validate()
    bad_k = K_7SCENES.copy()
    bad_k[1, 1] = 0
    with raises_naming("my_scan/frame-7", "fy > 0"):
        _frame(d, intrinsics=bad_k).validate()
    bad_k = K_7SCENES.copy()
    bad_k[2] = [0, 0, 2]
    with raises_naming("my_scan/frame-7", "pinhole"):
        _frame(d, intrinsics=bad_k).validate()
    with raises_naming("my_scan/frame-7", "NaN/inf"):
        _frame(d, pose=np.full((4, 4), -np.inf)).validate()
    with raises_naming("my_scan/frame-7", "orthonormal"):
        _frame(d, pose=np.diag([2.0, 1, 1, 1])).validate()
    assert _frame(d, pose=None).validate().pose is None


def test_non_invertible_intrinsics_file(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    np.savetxt(root / "camera-intrinsics.txt", [[0, 0, 320], [0, 585, 240], [0, 0, 1]])
    with raises_naming(root / "camera-intrinsics.txt", "not invertible"):
        open_frame_folder(root)


@pytest.mark.parametrize("text", ["fx fy cx\n1 2 3\n", "585 0 320\n0 585 240\n", ""])
def test_malformed_intrinsics_file(tmp_path, text):
    root = make_scannet(tmp_path / "scene", ids=("000000",), upscale=False)
    (root / "intrinsic" / "intrinsic_depth.txt").write_text(text)
    with raises_naming(root / "intrinsic" / "intrinsic_depth.txt", "intrinsics file"):
        open_frame_folder(root)


def test_color_depth_size_mismatch_7scenes(tmp_path):
    root = make_7scenes(tmp_path / "seq")
    path = root / "frame-000100.color.jpg"
    Image.open(path).resize((320, 240)).save(path)
    with raises_naming(path, r"frame-000100\.depth\.png.*sizes differ"):
        open_frame_folder(root)[2]


def test_invalid_scannet_pose(tmp_path):
    root = make_scannet(tmp_path / "scene", upscale=False)
    (root / "pose" / "50.txt").write_text("-inf -inf -inf -inf\n" * 4)  # how ScanNet marks a lost pose
    frames = open_frame_folder(root)
    assert frames[0].pose is not None
    with raises_naming(root / "pose" / "50.txt", "NaN/inf"):
        frames[1]
