"""Datasets: layouts behind :func:`open_split`, preprocessing, the synthetic set and the MVTec download.

The names load on first use (PEP 562): reading and preparing images without torch (:mod:`.image_files`,
:mod:`.model_input`, for ``patchcore predict`` with an ONNX model) does not import the torch datasets."""
from typing import TYPE_CHECKING

from patchcore_lib.utils.lazy import lazy_exports

if TYPE_CHECKING:  # the names, each loaded from its module on first use (PEP 562; utils/lazy.py)
    from patchcore_lib.data.layouts import (AUTO, LAYOUTS, FewShots, SplitDataset, open_split, resolve_layout,
                                            select_shots)
    from patchcore_lib.data.mvtec import (GOOD, MVTecDataset, Sample, check_category, check_category_name,
                                          dataset_fingerprint, dataset_manifest, find_samples, list_categories)
    from patchcore_lib.data.preprocessing import (DEFAULT_BATCH_SIZE, DEFAULT_CROP, DEFAULT_IMAGESIZE,
                                                  DEFAULT_MASK_CONVENTION, DEFAULT_RESIZE, MASK_CONVENTIONS, Preprocess,
                                                  collate, make_loader)
    from patchcore_lib.data.model_input import CROP_MODES, IMAGENET_MEAN, IMAGENET_STD
    from patchcore_lib.data.image_files import (IMAGE_EXTENSIONS, expand_inputs, list_images_recursive, load_mask,
                                                load_rgb)
    from patchcore_lib.data.images import ImageList, labelled_image_folder, normal_image_folder
    from patchcore_lib.data.folder import FolderDataset, check_folder_category
    from patchcore_lib.data.synthetic import default_category, ensure_default_dataset, make_synthetic_dataset
    from patchcore_lib.data.roots import (DATA_ROOT_ENV, category_roots, resolve_common_root, resolve_data_root,
                                          search_roots, user_data_dir)

__all__ = ["AUTO", "LAYOUTS", "FewShots", "SplitDataset", "open_split", "resolve_layout", "select_shots", "ImageList", "expand_inputs",
           "labelled_image_folder", "list_images_recursive", "normal_image_folder", "FolderDataset",
           "check_folder_category", "GOOD", "MVTecDataset", "Sample", "check_category", "check_category_name",
           "dataset_fingerprint", "dataset_manifest", "find_samples", "list_categories", "IMAGE_EXTENSIONS", "IMAGENET_MEAN",
           "IMAGENET_STD", "MASK_CONVENTIONS", "CROP_MODES", "DEFAULT_BATCH_SIZE", "DEFAULT_CROP", "DEFAULT_IMAGESIZE",
           "DEFAULT_MASK_CONVENTION", "DEFAULT_RESIZE", "Preprocess", "collate", "load_mask", "load_rgb",
           "make_loader",
           "default_category", "ensure_default_dataset", "make_synthetic_dataset",
           "DATA_ROOT_ENV", "category_roots", "resolve_common_root", "resolve_data_root", "search_roots", "user_data_dir"]

__getattr__, __dir__ = lazy_exports(__name__, __file__)
