"""The balancer's config, pure: YAML text in, frozen dataclasses or located errors out.

Every error is `file:line:col: key.path: message`, all of them found in one pass. Nothing here
reads a file, the environment or the clock: `balancer.ops.config_file.load_config` is the shell
that does, and hands the text, the environment and a secret reader to `parse_config`.

- `model`: the dataclasses and the key lists (the model only).
- `parse`: `parse_config`, the walk over the file that builds the model.
- `converters`: the parsers of single values and which one reads each key of a flat section.
- `routing`: the `routing:` section (rules, classes, learning).
- `yamltree`: the YAML node walker that collects problems instead of raising
  (`Reader.section` reads a flat section into its dataclass).
- `units`, `addresses`: durations, sizes, listen and backend addresses.
- `substitution`: `${VAR}` / `${VAR:-default}` in values.
- `schema`: the JSON Schema derived from the same key lists and parsers.
"""
