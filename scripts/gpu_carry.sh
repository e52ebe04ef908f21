#!/usr/bin/env bash
# Assemble .gpu/, the ignored folder that a device call carries for scripts/gpu_recipe.py: the
# real IMDb and Coldplay data, GPT-2's BPE files and the wheels the GPU image lacks (Python
# 3.12, x86-64). The lyrics are copyrighted: .gpu/ is never committed (.git/info/exclude).
# Run from the repository root: bash scripts/gpu_carry.sh [SHARED_DATA_DIR]
set -euo pipefail
data=${1:-../shared/data}
grep -qx /.gpu/ "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null ||
  echo /.gpu/ >>"$(git rev-parse --git-common-dir)/info/exclude"
rm -rf .gpu && mkdir -p .gpu/lyrics
cp -r "$data/imdb" "$data/tiktoken_cache" .gpu/
cp "$data/lyrics/coldplay.txt" .gpu/lyrics/

# What `from dvclive import Live` and a run of scratchgpt.live_metrics import that the image
# lacks or may hold in a version dvc was not tested with (found from sys.modules after a run),
# at the versions of requirements.txt's environment. dulwich and orjson are binary: cp312.
wheels="atpublic==9.0.0 attrs==26.1.0 colorama==0.4.6 diskcache==5.6.3 dpath==2.2.0
  dulwich==1.2.21 dvc==3.67.1 dvc-data==3.18.3 dvc-http==2.32.0 dvc-objects==5.2.0
  dvc-render==1.0.2 dvc-studio-client==0.23.0 dvclive==3.49.1 flatten-dict==0.5.0
  flufl.lock==9.2.0 fsspec==2026.9.0 funcy==2.1 nvidia-ml-py==13.615.71 orjson==3.13.0
  packaging==26.4 pathspec==1.1.1 psutil==7.2.2 pygtrie==2.6.2 ruamel.yaml==0.19.1
  scmrepo==3.6.2 sqltrie==0.11.3 tabulate==0.10.0 voluptuous==0.16.0 wcwidth==0.9.4
  zc.lockfile==4.0"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1; do
  platforms+=(--platform "${tag}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .gpu/whl $wheels
du -sh .gpu
