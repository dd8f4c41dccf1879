"""HAR files: find the credentials a browser capture holds, publish them as exposures, write a sanitized copy.

`reader` streams a HAR's entries in bounded memory; `detect` finds credentials in one entry (pure);
`sanitize` rewrites one entry without them (pure); `exposures` turns findings into exposure events (pure);
`scan` runs the passes over a file. The `orchestrator scan-har` command is in `orchestrator.har_cli`.
"""
