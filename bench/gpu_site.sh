# Sourced by the device-tool scripts (bench/gpu_session.sh, bench/tiny_sweep/run.sh, bench/crops_sweep_gpu.sh), from
# the repository root: installs the carried wheels (HUBKIT_WHEELS, default .gpu/whl, from
# ../shared/gpu/prepare_wheels.sh) into .gpu/site once per warm machine, copies this checkout's hubkit there on every
# call, and puts .gpu/site on PYTHONPATH.
export PYTHONPATH=$PWD/.gpu/site
if [ ! -d .gpu/site/trl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .gpu/site \
      ${HUBKIT_WHEELS:-.gpu/whl}/*.whl 2>&1 | tail -3
fi
rm -rf .gpu/site/hubkit && cp -r hubkit .gpu/site/hubkit && cp -r dataset_builder .gpu/site/hubkit/dataset_builder \
  && cp -r configs .gpu/site/hubkit/configs \
  && cp -r cards .gpu/site/hubkit/cards
