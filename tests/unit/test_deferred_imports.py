"""The Python-backend model puts off importing torch._dynamo, which torchvision imports for one
function: a torchvision model loads and answers without it, and the first real use imports it.
Each case runs in a fresh interpreter (the deferral only acts before torch._dynamo is imported)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from generator.runtime import model as runtime

PRELUDE = f"""
import sys
sys.path.insert(0, {str(runtime.__file__.rsplit("/", 1)[0])!r})
import model as runtime
def deferred():
    return "torch._dynamo" not in sys.modules
"""


def _run(code: str, defer: bool = True) -> str:
    code = ("runtime.defer_imports()\n" if defer else "") + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", PRELUDE + code],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_torchvision_model_loads_and_answers_without_importing_dynamo():
    out = _run("""
        import inspect, torch, torchvision
        from torchvision.ops import roi_align
        assert deferred()
        inspect.getmodule(roi_align)  # reads every module's __file__
        model = torchvision.models.resnet18().eval()
        with torch.inference_mode():
            print(tuple(model(torch.randn(1, 3, 64, 64)).shape))
        boxes = [torch.tensor([[0.0, 0.0, 4.0, 4.0]])]
        assert roi_align(torch.randn(1, 3, 8, 8), boxes, 2).shape == (1, 3, 2, 2)  # detectors'
        assert deferred(), "a forward pass imported torch._dynamo"
        assert sys.modules["torch._dynamo.utils"].__file__.endswith("_dynamo/utils.py")
        assert not any(hasattr(m, "__path__") for n, m in sys.modules.items()
                       if n.startswith("torch._dynamo"))
        print("deferred")
    """)
    assert out.split() == ["(1,", "1000)", "deferred"]


def test_the_first_real_use_imports_it_and_answers_as_the_real_module():
    out = _run("""
        import torch, torchvision
        from torch._dynamo.utils import is_compile_supported
        assert deferred()
        print(is_compile_supported("cpu"), torch._dynamo.is_compiling())
        assert not deferred()
        import torch._dynamo.utils as real
        assert sys.modules["torch._dynamo.utils"] is real
        print(real.is_compile_supported("cpu"))
    """)
    assert out.split() == ["True", "False", "True"]


def test_torch_compile_and_submodule_imports_go_through():
    out = _run("""
        import torch, torchvision
        import torch._dynamo.eval_frame  # a module of the deferred package: imported once
        assert not deferred()
        assert sys.modules["torch._dynamo.eval_frame"] is torch._dynamo.eval_frame
        assert torch._dynamo.eval_frame.OptimizedModule is torch._dynamo.OptimizedModule
        assert sys.modules["torch._dynamo.utils"] is torch._dynamo.utils
        assert type(torch._dynamo.utils).__name__ == "module"
        assert not any(type(f).__name__ == "_EndDeferral" for f in sys.meta_path)
        compiled = torch.compile(torch.nn.Linear(3, 2), backend="eager")
        print(tuple(compiled(torch.randn(4, 3)).shape))
    """)
    assert out.split() == ["(4,", "2)"]


def test_the_package_imported_by_name_gets_its_real_modules():
    out = _run("""
        import torch, torchvision
        import torch._dynamo
        assert type(sys.modules["torch._dynamo.utils"]).__name__ == "module"
        assert torch._dynamo.utils.is_compile_supported.__module__ == "torch._dynamo.utils"
        print(torch._dynamo.is_compiling())
    """)
    assert out.split() == ["False"]


def test_nothing_is_deferred_once_dynamo_is_imported():
    out = _run("""
        import torch._dynamo
        runtime.defer_imports()
        print(deferred())
    """, defer=False)
    assert out.split() == ["False"]


def test_nothing_is_deferred_where_the_module_is_not_found():
    out = _run("""
        runtime.DEFERRED_PACKAGE = "torch._not_there"
        runtime.DEFERRED = {"torch._not_there.utils": ("f",)}
        runtime.defer_imports()
        print("torch._not_there.utils" in sys.modules,
              any(type(f).__name__ == "_EndDeferral" for f in sys.meta_path))
    """, defer=False)
    assert out.split() == ["False", "False"]


def test_nothing_is_deferred_where_the_config_asks_for_imports_at_load():
    out = _run("""
        runtime.defer_imports({runtime.DEFERRED_IMPORTS: runtime.AT_LOAD})
        print("torch._dynamo.utils" in sys.modules)
    """, defer=False)
    assert out.split() == ["False"]
