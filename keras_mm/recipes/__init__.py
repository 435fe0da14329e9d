"""YAML recipes: `load_recipe(path, overrides=[...])`, validation, `--set`.

See `keras_mm.recipes.recipe` for the recipe format.
"""

from keras_mm.recipes.recipe import (apply_overrides, load_recipe,
                                     normalize_recipe, parse_override,
                                     read_yaml, recipe_model_spec,
                                     save_recipe)

__all__ = ["apply_overrides", "load_recipe", "normalize_recipe",
           "parse_override", "read_yaml", "recipe_model_spec", "save_recipe"]
