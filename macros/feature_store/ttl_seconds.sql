{#- The contract's TTL grammar and bound (sync/contract.py parse_ttl; tests/test_pit_macro.py
    checks they agree): 7d, 1d12h, 90m, 45s, 2w, ISO 8601 (P7D, PT12H), whole seconds, at
    most 100 years; 0/none: no TTL. `view` names the feature view in the error. -#}
{% macro ttl_seconds(value, view=none) -%}
  {%- set parsed = feature_store._ttl_parse(value) -%}
  {%- if parsed.error -%}
    {{ exceptions.raise_compiler_error("feature_store: " ~ ("feature view '" ~ view ~ "': " if view else "") ~ "ttl " ~ parsed.error) }}
  {%- endif -%}
  {{ return(parsed.seconds) }}
{%- endmacro %}

{#- {seconds, error}: the seconds (none: no TTL) or, word for word as parse_ttl's ValueError, why not. -#}
{% macro _ttl_parse(value) -%}
  {%- set shown = "'" ~ value ~ "'" if value is string else value | string -%}
  {%- set ns = namespace(total=none, error=none) -%}
  {%- if value is none -%}
  {%- elif value is boolean or (value is number and value is not integer) or (value is not number and value is not string) -%}
    {%- set ns.error = shown ~ " is not a duration" -%}
  {%- elif value is number -%}
    {%- if value < 0 -%}{%- set ns.error = value ~ " is negative" -%}{%- else -%}{%- set ns.total = value -%}{%- endif -%}
  {%- else -%}
    {%- set text = value | trim -%}
    {%- set iso = modules.re.match('^P(?:(\\d+)W)?(?:(\\d+)D)?(?:T(?:(\\d+)H)?(?:(\\d+)M)?(?:(\\d+)S)?)?$', text.upper()) -%}
    {%- set compact = text.lower().replace(' ', '') -%}
    {%- set parts = modules.re.findall('(\\d+)(w|d|h|m|s)', compact) -%}
    {%- if text.isdigit() -%}
      {%- set ns.total = text | int -%}
    {%- elif iso and text.upper() not in ['P', 'PT'] and not text.upper().endswith('T') -%}
      {%- set g = iso.groups() -%}
      {%- set ns.total = (g[0] or 0) | int * 604800 + (g[1] or 0) | int * 86400 + (g[2] or 0) | int * 3600 + (g[3] or 0) | int * 60 + (g[4] or 0) | int -%}
    {%- else -%}
      {%- set units = {'w': 604800, 'd': 86400, 'h': 3600, 'm': 60, 's': 1} -%}
      {%- set acc = namespace(total=0, text='') -%}
      {%- for n, u in parts -%}
        {%- set acc.total = acc.total + (n | int) * units[u] -%}
        {%- set acc.text = acc.text ~ n ~ u -%}
      {%- endfor -%}
      {%- if parts and acc.text == compact -%}{%- set ns.total = acc.total -%}{%- else -%}{%- set ns.error = shown ~ " is not a duration" -%}{%- endif -%}
    {%- endif -%}
  {%- endif -%}
  {%- if ns.total is not none and ns.total > 36525 * 86400 -%}  {#- sync/contract.py MAX_TTL_SECONDS -#}
    {%- set ns.error = shown ~ " is longer than 100 years (36525d), the longest TTL; omit ttl for features that never expire" -%}
  {%- endif -%}
  {{ return({'seconds': none if ns.error else (ns.total or none), 'error': ns.error}) }}
{%- endmacro %}
