"""Write the emoji image folder the bundled `emoji` model trains on.

Reads the 64x64 PNGs of the npm packages locked in datasets/emoji/package-lock.json
(emoji-datasource-google and emoji-datasource-twitter), every emoji and skin-tone variant
that both vendors draw, and copies them into <out>/<category>/<vendor>-<image>.png, one
sub-folder per category of their emoji.json. The "Component" category (bare skin-tone and
hair swatches) is left out: its five images are not emoji a user would draw.
The PNGs are copied byte for byte; their transparency is composited onto black by the
runtime's image policy when they are read, in training and at inference alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

VENDORS = ("google", "twitter")
# emoji.json's categories -> short folder names (the names of the model's category priors).
CATEGORIES = {
    "Smileys & Emotion": "smileys",
    "People & Body": "people",
    "Animals & Nature": "animals",
    "Food & Drink": "food",
    "Travel & Places": "travel",
    "Activities": "activities",
    "Objects": "objects",
    "Symbols": "symbols",
    "Flags": "flags",
}
CREDITS = """\
Emoji images from the npm packages emoji-datasource-google and emoji-datasource-twitter
{version} (https://github.com/iamcal/emoji-data, MIT licence for the packages).
Google: Noto Emoji, Copyright Google Inc., Apache License 2.0.
Twitter: Twemoji, Copyright Twitter, Inc and other contributors, CC-BY 4.0
(https://creativecommons.org/licenses/by/4.0/).
"""


def images_of(entry: dict) -> list[str]:
    variants = [entry] + list(entry.get("skin_variations", {}).values())
    return [v["image"] for v in variants if all(v.get(f"has_img_{vendor}") for vendor in VENDORS)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (must not exist yet)")
    parser.add_argument("--packages", type=Path, default=Path(__file__).parent / "node_modules", help="node_modules of datasets/emoji")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"{args.out} exists; remove it or pick another folder", file=sys.stderr)
        return 2
    index = json.loads((args.packages / "emoji-datasource-google" / "emoji.json").read_text(encoding="utf-8"))
    version = json.loads((args.packages / "emoji-datasource-google" / "package.json").read_text(encoding="utf-8"))["version"]
    tmp = args.out.with_name(args.out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    counts: dict[str, int] = {}
    for entry in index:
        folder = CATEGORIES.get(entry["category"])
        if folder is None:
            continue
        for image in images_of(entry):
            for vendor in VENDORS:
                src = args.packages / f"emoji-datasource-{vendor}" / "img" / vendor / "64" / image
                if not src.is_file():
                    continue
                dst = tmp / folder / f"{vendor}-{image}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                counts[folder] = counts.get(folder, 0) + 1
    (tmp / "CREDITS.txt").write_text(CREDITS.format(version=version), encoding="utf-8")
    tmp.rename(args.out)  # the folder appears whole or not at all
    print(f"{sum(counts.values())} images in {len(counts)} categories -> {args.out}")
    for name, n in sorted(counts.items()):
        print(f"  {name}: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
