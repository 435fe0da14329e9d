"""keras.applications' ImageNet weights: where Keras keeps them, and how
they are found offline or downloaded (used by `ApplicationsImageEncoder`)."""

import os
import socket
import urllib.parse
import urllib.request

import keras


# keras.applications' ImageNet weights without the classifier
# (include_top=False), as Keras 3.15 names, serves and hashes them (md5).
IMAGENET_WEIGHTS = {
    "resnet50": (
        "keras.applications.ResNet50",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/"
        "resnet/",
        "4d473c1dd8becc155b73f8504c6f6626"),
    "mobilenet_v3_small": (
        "keras.applications.MobileNetV3Small",
        "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
        "https://storage.googleapis.com/tensorflow/keras-applications/"
        "mobilenet_v3/",
        "d3e8ec802a04aa4fc771ee12a9a9b836"),
    "efficientnet_b0": (
        "keras.applications.EfficientNetB0",
        "efficientnetb0_notop.h5",
        "https://storage.googleapis.com/keras-applications/",
        "50bc09e76180e00e4465e1a485ddc09d"),
}


def keras_cache_folder():
    """The folder where Keras keeps downloaded application weights:
    `$KERAS_HOME/models` (read now, so a later `KERAS_HOME` counts), else
    `~/.keras/models`; `/tmp/.keras/models` where that is not writable (as
    `keras.utils.get_file` does)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        if not os.access(base, os.W_OK):
            base = "/tmp"
        home = os.path.join(base, ".keras")
    home = os.path.expanduser(home)
    if os.path.isdir(home) and not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return os.path.join(home, "models")


def one_line(error):
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _reachable(url, timeout=5.0):
    """None when the host of `url` (or the proxy urllib would use for it)
    accepts a connection, else the reason."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname, parts.port or (
        443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        proxy = urllib.parse.urlsplit(proxy if "://" in proxy
                                      else "http://" + proxy)
        host, port = proxy.hostname, proxy.port or 80
        what = f"the proxy {host}:{port}"
    else:
        what = host
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        return f"no connection to {what}: {type(error).__name__}: " \
            f"{one_line(error)}"
    return None


def imagenet_weights_file(backbone, owner="ApplicationsImageEncoder"):
    """The local path of `backbone`'s ImageNet weights (include_top=False).

    The Keras cache folder (`keras_cache_folder()`) is looked at first: a
    file there under Keras's name is used as it is, without the network.
    Otherwise Keras downloads it (`keras.utils.get_file`, hash-checked)
    into that folder. Where the host (or the proxy urllib would use)
    cannot be reached, checked with a 5-second connection before Keras
    tries, or the download fails, a one-line `ValueError` names the file,
    its URL and the folder to put it in; `owner` starts it.
    """
    application, fname, base, file_hash = IMAGENET_WEIGHTS[backbone]
    folder = keras_cache_folder()
    path = os.path.join(folder, fname)
    if os.path.isfile(path):
        return path
    origin = base + fname

    def offline(reason):
        return ValueError(
            f"{owner}: weights='imagenet' for backbone={backbone!r} "
            f"needs the file {fname} (the ImageNet weights of {application}"
            f"(include_top=False)), which is not in the Keras cache folder "
            f"{folder} and cannot be downloaded here ({reason}); download "
            f"{origin} where there is a network (or run {application}("
            "include_top=False, weights='imagenet') there) and copy it into "
            f"{folder}/ ($KERAS_HOME/models, default ~/.keras/models), or "
            "give weights= the path of a local weights file")

    reason = _reachable(origin)
    if reason is not None:
        raise offline(reason)
    try:
        os.makedirs(folder, exist_ok=True)
        return keras.utils.get_file(fname, origin, cache_subdir="models",
                                    cache_dir=os.path.dirname(folder),
                                    file_hash=file_hash)
    except Exception as error:  # urllib / hash errors
        raise offline(f"the download failed: {one_line(error)}") from None
