"""Reading a recipe file: `read_yaml(path)` with bounded cost.

`yaml.safe_load` only (no Python objects, no code), after checks on the
composed node graph (`yaml.compose` builds no objects): the file is at most
`MAX_RECIPE_BYTES` of UTF-8 text, its aliases expand to at most
`MAX_RECIPE_VALUES` values (a 355-byte "billion laughs" expands to 10**9;
every later step - validation, deep copies - would walk them all), and no
mapping key is given twice. Each error is a `ConfigError` naming the file.
"""

import os

import yaml

from keras_mm.errors import ConfigError

# Bounds on what a recipe file may hold: a recipe has hundreds of values;
# YAML aliases could expand a few hundred bytes into billions ("billion
# laughs"), and every later step (validation, deep copies) walks the
# expanded data.
MAX_RECIPE_BYTES = 4 << 20
MAX_RECIPE_VALUES = 100_000


def _expanded_size(root):
    """Number of values `root` (a `yaml.compose` node) holds once its
    aliases are expanded, counted in time linear in the distinct nodes.
    Stops counting past `MAX_RECIPE_VALUES`; raises on a recursive alias."""
    sizes, active = {}, set()

    def size(node):
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(None, f"line {node.start_mark.line + 1}: a "
                              "recursive YAML alias (an anchor used inside "
                              "itself); write the value out")
        active.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = ()
        for child in children:
            total += size(child)
            if total > MAX_RECIPE_VALUES:
                break
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


def _check_expansion(node):
    """Refuses a recipe whose aliases expand past `MAX_RECIPE_VALUES`."""
    if node is None:
        return
    if _expanded_size(node) > MAX_RECIPE_VALUES:
        raise ConfigError(
            None, f"the recipe holds more than {MAX_RECIPE_VALUES:,} values "
            "once its YAML aliases (*name) are expanded (an alias bomb?); "
            "recipes need far fewer: remove the anchors (&name) and "
            "aliases, and write the values out")


def _check_duplicate_keys(node, path="", seen_nodes=None):
    """Raises on a mapping key given twice (safe_load keeps the last one
    silently). `node` comes from `yaml.compose`, which builds no objects.
    A node reached again through an alias is checked once."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) \
                else None
            child = f"{path}.{key}" if path else str(key)
            if key is not None and key in seen:
                raise ConfigError(
                    child, f"key {key!r} is given twice (lines "
                    f"{seen[key] + 1} and {key_node.start_mark.line + 1}); "
                    "keep one")
            if key is not None:
                seen[key] = key_node.start_mark.line
            _check_duplicate_keys(value_node, child, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{path}[{i}]", seen_nodes)


def _not_utf8(path, error):
    byte = error.object[error.start]
    return ConfigError(
        None, f"the recipe is not UTF-8 text (byte 0x{byte:02x} at offset "
        f"{error.start} cannot be decoded: {error.reason}); save it as "
        "UTF-8", source=path)


def read_yaml(path):
    """Reads a YAML file with `yaml.safe_load`; errors name the file.

    Refused with a `ConfigError` naming the file: an unreadable file, one
    over `MAX_RECIPE_BYTES`, text that is not UTF-8, invalid YAML, a key
    given twice, and aliases expanding past `MAX_RECIPE_VALUES` values.
    """
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        if size > MAX_RECIPE_BYTES:
            raise ConfigError(None, f"the recipe is {size:,} bytes; a recipe "
                              f"holds at most {MAX_RECIPE_BYTES:,} (is this "
                              "the right file?)", source=path)
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as error:
        raise ConfigError(None, f"cannot read the recipe: "
                          f"{error.strerror or error}", source=path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, error) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_expansion(node)
        _check_duplicate_keys(node)
        data = yaml.safe_load(text)
    except ConfigError as error:
        raise error.with_source(path) from None
    except RecursionError:
        raise ConfigError(None, "the YAML is nested too deeply; a recipe "
                          "needs a few levels", source=path) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " \
            if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        hint = ""
        if isinstance(error, yaml.constructor.ConstructorError):
            hint = ("; recipes are read with yaml.safe_load, which builds "
                    "plain data only (no Python objects, no code)")
        raise ConfigError(None, f"{where}invalid YAML: {problem}{hint}",
                          source=path) from None
    return data
