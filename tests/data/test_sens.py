"""The .sens reader on a file written by the test from real 7-Scenes frames: header, poses, depth, color, truncation."""
import struct

import numpy as np
import pytest
from sens_writer import kitchen_frames, write_sens

from ppkt.data.sens import SensError, SensReader

HEADER_BYTES = 4 + 8 + len("StructureSensor") + 4 * 64 + 4 * 2 + 4 * 5 + 8  # 327
FRAME_HEADER_BYTES = 16 * 4 + 4 * 8


@pytest.fixture(scope="module")
def kitchen():
    return kitchen_frames(count=12)


@pytest.fixture(scope="module")
def sens(tmp_path_factory, kitchen):
    frames, K_color, K_depth = kitchen
    return write_sens(tmp_path_factory.mktemp("sens") / "scene0000_00.sens", frames, K_color, K_depth)


def test_header_reads_back(sens, kitchen):
    frames, K_color, K_depth = kitchen
    with SensReader(sens) as r:
        h = r.header
        assert (h.version, h.sensor_name, h.num_frames, len(r)) == (4, "StructureSensor", 12, 12)
        assert (h.color_compression, h.depth_compression) == ("jpeg", "zlib_ushort")
        assert h.color_size == (1280, 960) and h.depth_size == (640, 480) and h.depth_shift == 1000.0
        assert np.array_equal(h.intrinsic_color, K_color.astype(np.float32))
        assert np.array_equal(h.intrinsic_depth, K_depth.astype(np.float32))
        assert np.array_equal(h.extrinsic_color, np.eye(4)) and np.array_equal(h.extrinsic_depth, np.eye(4))
        assert r._offsets[0, 0] == HEADER_BYTES + FRAME_HEADER_BYTES


def test_frames_read_back_exactly_in_any_order(sens, kitchen):
    frames = kitchen[0]
    with SensReader(sens) as r:
        for i in (7, 0, 11, 3):
            fr = r[i]
            assert fr.index == i and fr.timestamp_color == 1000 * i and fr.timestamp_depth == 1000 * i + 7
            assert np.array_equal(fr.pose, frames[i]["pose"].astype(np.float32))  # poses exact (stored as float32)
            assert fr.pose_valid
            assert fr.depth.dtype == np.uint16 and np.array_equal(fr.depth, frames[i]["depth"])  # depth exact
            assert fr.color.shape == (960, 1280, 3)
            diff = np.abs(fr.color.astype(int) - frames[i]["color"].astype(int))
            assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 16  # JPEG quality 95
        assert np.array_equal(r.poses, np.stack([f["pose"] for f in frames]).astype(np.float32))
        assert r[-1].index == 11
        with pytest.raises(IndexError, match="12 frames"):
            r[12]


@pytest.mark.parametrize("where", ["version", "name", "calibration", "frame count", "frame 0 header",
                                   "frame 3 color", "frame 5 depth", "last byte", "frame boundary"])
def test_truncated_file_fails_at_open_naming_file_and_frame(sens, tmp_path, where):
    data = sens.read_bytes()
    with SensReader(sens) as r:
        offsets, sizes = r._offsets, r._sizes
    cut = {
        "version": 2, "name": 15, "calibration": 100, "frame count": HEADER_BYTES - 3,
        "frame 0 header": HEADER_BYTES + 40,
        "frame 3 color": int(offsets[3, 0] + sizes[3, 0] // 2),
        "frame 5 depth": int(offsets[5, 1] + 10),
        "last byte": len(data) - 1,
        "frame boundary": int(offsets[8, 0] - FRAME_HEADER_BYTES),  # frames 0-7 whole, 8-11 missing
    }[where]
    bad = tmp_path / "cut.sens"
    bad.write_bytes(data[:cut])
    expected = {"version": "ends inside the header", "name": "ends inside the header",
                "calibration": "ends inside the header", "frame count": "ends inside the header",
                "frame 0 header": "frame 0 of 12", "frame 3 color": "frame 3 of 12", "frame 5 depth": "frame 5 of 12",
                "last byte": "frame 11 of 12", "frame boundary": "frame 8 of 12: it ends inside the frame header"}[where]
    with pytest.raises(SensError, match=rf"cut\.sens: .*({expected})"):
        SensReader(bad)


def test_corrupt_data_and_wrong_files_give_clear_errors(sens, tmp_path):
    data = bytearray(sens.read_bytes())
    with SensReader(sens) as r:
        d0, d_size = int(r._offsets[4, 1]), int(r._sizes[4, 1])
        c0 = int(r._offsets[6, 0])
    broken = bytearray(data)
    broken[d0: d0 + d_size] = b"\x00" * d_size  # frame 4: depth bytes are not zlib
    broken[c0 + 2: c0 + 400] = b"\x00" * 398  # frame 6: JPEG header destroyed
    path = tmp_path / "broken.sens"
    path.write_bytes(bytes(broken))
    with SensReader(path) as r:
        assert np.array_equal(r[3].depth, SensReader(sens)[3].depth)  # the other frames still read
        with pytest.raises(SensError, match=r"broken\.sens: frame 4: corrupt zlib depth"):
            r[4]
        with pytest.raises(SensError, match=r"broken\.sens: frame 6: corrupt jpeg color"):
            r[6]
    wrong = tmp_path / "v3.sens"
    wrong.write_bytes(struct.pack("<I", 3) + bytes(data[4:]))
    with pytest.raises(SensError, match=r"v3\.sens: not a ScanNet \.sens file of version 4 \(version field is 3\)"):
        SensReader(wrong)
    with pytest.raises(SensError, match=r"missing\.sens: file not found"):
        SensReader(tmp_path / "missing.sens")


def test_invalid_pose_is_read_and_flagged(tmp_path, kitchen):
    frames, K_color, K_depth = kitchen
    frames = [dict(f) for f in frames[:3]]
    frames[1]["pose"] = np.full((4, 4), -np.inf)
    with SensReader(write_sens(tmp_path / "s.sens", frames, K_color, K_depth)) as r:
        assert [r[i].pose_valid for i in range(3)] == [True, False, True]
