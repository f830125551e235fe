"""The class lists of the datasets ppkt knows, in one place below the tasks that use them (dataset conversion,
the synthetic world, segmentation and detection)."""

# NYU40 ids of ScanNet's 20 segmentation classes, in the scannet20 order (wall .. otherfurniture)
SCANNET20_NYU40 = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
# ScanNet's 18 detection classes (VoteNet's) and their NYU40 ids, in that order
SCANNET_DETECTION_CLASSES = ("cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
                             "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub",
                             "garbagebin")
SCANNET_DETECTION_NYU40 = (3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
# SUN RGB-D's 10 detection classes (VoteNet's)
SUNRGBD_CLASSES = ("bed", "table", "sofa", "chair", "toilet", "desk", "dresser", "night_stand", "bookshelf", "bathtub")
# the synthetic world's 12 classes; floor, wall and ceiling (ids 0-2) are structure: no object, no box
SYNTHETIC_CLASSES = ("floor", "wall", "ceiling", "table", "chair", "bed", "sofa", "cabinet", "shelf", "monitor", "box",
                     "lamp")
SYNTHETIC_STRUCTURE = (0, 1, 2)
