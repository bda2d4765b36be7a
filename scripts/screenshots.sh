#!/usr/bin/env bash
# Take the docs' pictures again and replace the committed ones in docs/images/: the Connections
# form, its Test button's success (tests/ui), and a finished pipeline run's Grid view and deferred
# wait's task log (the real stack in tests/system). A normal test run takes the same pictures into
# artifacts/docs-images/ and never touches docs/images/. Look at each before committing it.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
export TFY_DOCS_IMAGES="$PWD/docs/images"
.venv/bin/pytest -q "$@" \
  tests/ui/test_docs_pictures.py \
  tests/system/test_assets_stack.py::test_pictures_of_the_finished_pipeline_run
ls -l docs/images/
