"""ImageNet normalisation of RGB in [0, 1] (torchvision's constants), shared by the 2D models and the 2D data."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
