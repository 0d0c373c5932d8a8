"""Writes the small MAT v5 fixtures of features/tests/datasets_mat.rs with scipy.io.savemat,
so the Rust MAT reader is checked against an independent writer.

Usage: python tools/make_dataset_fixtures.py   (needs numpy and scipy; output < 10 KB)
"""
import os

import numpy as np
from scipy.io import savemat

OUT = os.path.join(os.path.dirname(__file__), "..", "features", "tests", "data", "mat")


def cell(strings):
    c = np.empty((len(strings), 1), dtype=object)
    for i, s in enumerate(strings):
        c[i, 0] = s
    return c


def main():
    os.makedirs(OUT, exist_ok=True)
    files = ["n02085620-Chihuahua/n02085620_10074.jpg", "n02085782-Japanese_spaniel/n02085782_82.jpg"]
    for compress in (False, True):
        savemat(
            os.path.join(OUT, f"dogs_list_{'z' if compress else 'raw'}.mat"),
            {
                "file_list": cell(files),
                "annotation_list": cell([f[:-4] for f in files]),
                "labels": np.array([[1.0], [2.0]]),
            },
            do_compression=compress,
        )
    dt = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("class", "O"), ("fname", "O")]
    annos = np.zeros((1, 3), dtype=dt)
    for i, (cls, fname) in enumerate([(14, "00001.jpg"), (3, "00002.jpg"), (196, "00003.jpg")]):
        annos[0, i] = (np.uint16(39 + i), np.uint8(116), np.uint16(569), np.uint16(375), np.uint8(cls), fname)
    savemat(os.path.join(OUT, "cars_annos.mat"), {"annotations": annos}, do_compression=True)
    names = np.empty((1, 2), dtype=object)
    names[0, 0] = "AM General Hummer SUV 2000"
    names[0, 1] = "Ram C/V Cargo Van Minivan 2012"
    savemat(os.path.join(OUT, "cars_meta.mat"), {"class_names": names, "big": np.arange(6, dtype=np.int32).reshape(2, 3)})


if __name__ == "__main__":
    main()
