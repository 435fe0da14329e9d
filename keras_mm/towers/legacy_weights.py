"""Loading tower weights saved before the per-modality encoder registries.

Until then a tower held its encoder's sublayers itself (`image_tower/convs/
conv0`, `image_tower/resnet/...`); now they sit under the encoder
(`image_tower/image_encoder/convs/conv0`). A tower calls
`remap_legacy_encoder` from its `load_own_variables`, which Keras calls on
the tower before it walks the tower's sublayers: where the file has no
group for the encoder, the rest of the walk reads the old paths.
"""


def _join(*parts):
    return "/".join(p for p in parts if p)


def remap_legacy_encoder(store, child, legacy_path, shares_variables=False):
    """Makes `store` read a tower's encoder from its pre-registry paths.

    Args:
        store: the weights store Keras passes to the tower's
            `load_own_variables` (an H5 store positioned at the tower).
        child: the tower attribute holding the encoder (`"image_encoder"`).
        legacy_path: where the encoder's sublayers sat relative to the
            tower: `""` (directly under it) or an attribute name
            (`"resnet"`, the encoder's own group).
        shares_variables: with `legacy_path=""`, whether the tower's own
            variables in the file are the encoder's own (a ViT's [CLS]
            token); otherwise they stay the tower's and the encoder's own
            variables are read as empty.

    Returns:
        True where the file is in the old layout and the store now maps
        `<tower>/<child>/...` to `<tower>/<legacy_path>/...`; False where
        the file has the encoder's group (or the store is not an H5 store,
        whose layout is then left to Keras).
    """
    h5_file = getattr(store, "h5_file", None)
    tower = getattr(store, "_h5_entry_path", None)
    if h5_file is None or tower is None:
        return False
    new = _join(tower, child)
    if new in h5_file or (tower and tower not in h5_file):
        return False
    # One wrapper per store, applying the remaps in the order the towers
    # installed them: a tower inside a remapped tower (a video tower's
    # frame CNN) sees, and remaps further, the already remapped paths.
    remaps = getattr(store, "_keras_mm_legacy_remaps", None)
    if remaps is None:
        remaps = store._keras_mm_legacy_remaps = []
        get = store.get

        def get_remapped(path):
            for prefix, target, exact in remaps:
                if path.startswith(prefix + "/") or (exact and path == prefix):
                    path = target + path[len(prefix):]
            return get(path)

        store.get = get_remapped
    remaps.append((new, _join(tower, legacy_path),
                   bool(legacy_path or shares_variables)))
    return True
