"""Every subcommand of the CLI. ``info``, ``verify``, ``cleanup`` and ``layer`` come with :mod:`.layer`;
the rest are named here by class and imported only when they run (plumbum's lazy subcommands), so a
one-shot call loads neither the archive code, the image and container stores, nor the servers."""

from .app import GraphDriverApp
from .layer import LayerApp

for _name, _cls in (("image", "image.ImageApp"), ("container", "container.ContainerApp"),
                    ("serve", "serve.ServeApp"), ("demo", "demo.DemoCmd")):
    GraphDriverApp.subcommand(_name, f"{__package__}.{_cls}")
for _name, _cls in (("apply", "LayerApply"), ("diff", "LayerDiff"), ("changes", "LayerChanges"),
                    ("diff-size", "LayerDiffSize")):
    LayerApp.subcommand(_name, f"{__package__}.archive_cmds.{_cls}")
