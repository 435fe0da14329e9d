"""Start from the data: infer a recipe from a manifest or a folder.

- `infer_dataset(path, label=None)`: what each column / the folder holds
  (modality, sizes, lengths, label and head), reading a bounded sample of
  file headers; writes nothing (`keras-mm data inspect` shows it);
- `init_recipe(path, out=...)`: the same inference, then the recipe (and,
  for a folder or a single manifest, the split manifests) written next to
  `out` (`keras-mm init DATA`);
- `example_names()` / `copy_example(name, out)`: the recipes shipped in
  the package (`keras-mm init --example NAME`).

Modules: `file_probe` (one file's kind and shape from its header),
`column_kinds` (a column's modality), `folder_layout` (class subfolders ->
rows and splits), `recipe_writer` (inference -> recipe and summary),
`dataset_inference` (this API).
"""

from keras_mm.inference.dataset_inference import (copy_example,
                                                  example_names,
                                                  infer_dataset, init_recipe)

__all__ = ["copy_example", "example_names", "infer_dataset", "init_recipe"]
