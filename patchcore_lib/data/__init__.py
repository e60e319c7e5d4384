"""Datasets: layouts behind :func:`open_split`, preprocessing, the synthetic set and the MVTec download."""
from patchcore_lib.data.layouts import LAYOUTS, open_split
from patchcore_lib.data.mvtec import (GOOD, MVTecDataset, Sample, check_category, dataset_fingerprint, find_samples,
                                      list_categories)
from patchcore_lib.data.preprocessing import (CROP_MODES, IMAGE_EXTENSIONS, IMAGENET_MEAN, IMAGENET_STD, Preprocess, collate,
                                              load_mask, load_rgb, make_loader)
from patchcore_lib.data.synthetic import default_category, ensure_default_dataset, make_synthetic_dataset
from patchcore_lib.data.roots import DATA_ROOT_ENV, resolve_data_root, search_roots, user_data_dir

__all__ = ["LAYOUTS", "open_split", "GOOD", "MVTecDataset", "Sample", "check_category", "dataset_fingerprint",
           "find_samples", "list_categories", "CROP_MODES", "IMAGE_EXTENSIONS", "IMAGENET_MEAN", "IMAGENET_STD", "Preprocess",
           "collate", "load_mask", "load_rgb", "make_loader", "default_category", "ensure_default_dataset",
           "make_synthetic_dataset", "DATA_ROOT_ENV", "resolve_data_root", "search_roots", "user_data_dir"]
