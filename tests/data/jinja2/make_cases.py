"""Renders tests/data/jinja2/*.jinja with jinja2 configured exactly as Hugging Face transformers'
_compile_jinja_template does (ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
extensions=[loopcontrols]), tojson = json.dumps(ensure_ascii=False, ...), raise_exception), and
writes cases.json for tests/chat_template.rs. Needs `pip install jinja2` (3.1.x).
Run from this folder: python3 make_cases.py"""
import json
import jinja2
import jinja2.ext
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception

TEMPLATES = ["features.jinja", "macros.jinja"]
CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "  You are terse.\n"}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke about \"quotes\" & <tags>.\nTwo lines?"}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    [{"role": "user", "content": "  spaced  "}, {"role": "assistant", "content": " ok \n"},
     {"role": "user", "content": "héllo ünïcode ✓ 😀 o'neil 3rd"}],
    [{"role": "user", "content": "x"}, {"role": "tool", "content": "{}"}],
]

cases = []
for name in TEMPLATES:
    tmpl = env.from_string(open(name, encoding="utf-8").read())
    for messages in CONVERSATIONS:
        for agp in (True, False):
            case = {"template": name, "messages": messages, "add_generation_prompt": agp}
            try:
                case["text"] = tmpl.render(messages=messages, tools=None, documents=None,
                                           add_generation_prompt=agp, bos_token="<s>", eos_token="</s>")
            except TemplateError as e:
                case["error"] = str(e)
            cases.append(case)
with open("cases.json", "w", encoding="utf-8") as f:
    json.dump({"renderer": "jinja2 %s as transformers configures it" % jinja2.__version__, "cases": cases},
              f, ensure_ascii=False, indent=1)
print(len(cases), "cases,", sum("error" in c for c in cases), "errors")
