"""Synthetic indoor RGB-D world with ground truth: procedural labelled rooms, a ray-cast RGB-D renderer,
surface point clouds with 3D boxes, and a dataset writer (see docs/synthetic.md).

World frame z up, metres; cameras x right, y down, z forward with (4, 4) camera-to-world poses.
"""
from ppkt.synthetic.dataset import (DATASET_VERSION, make_scene, render_scene, scene_name, scene_rngs,
                                    write_dataset, write_frame_folder)
from ppkt.synthetic.pointcloud import PointCloud, load_scene, sample_surface, save_scene
from ppkt.synthetic.render import (RenderedFrame, add_depth_noise, camera_trajectory, cast_rays, default_intrinsics,
                                   look_at, render_frame)
from ppkt.synthetic.scene import (CLASS_COLORS, CLASS_NAMES, IGNORE_INDEX, IGNORE_LABEL, NUM_CLASSES, Material,
                                  Scene, SceneBuilder, class_table, generate_scene, sample_material)

__all__ = ["CLASS_NAMES", "CLASS_COLORS", "NUM_CLASSES", "IGNORE_LABEL", "IGNORE_INDEX", "class_table",
           "Material", "sample_material", "Scene", "SceneBuilder", "generate_scene",
           "RenderedFrame", "default_intrinsics", "look_at", "camera_trajectory", "cast_rays", "render_frame",
           "add_depth_noise", "PointCloud", "sample_surface", "save_scene", "load_scene",
           "DATASET_VERSION", "scene_name", "scene_rngs", "make_scene", "render_scene", "write_frame_folder",
           "write_dataset"]
