"""Maps the repository's top-level `core/` and `tui/` folders to `lamina.core` and `lamina.tui`.

The package list is computed so that a new subpackage needs no edit here.
"""

from setuptools import find_packages, setup

PACKAGE_DIRS = {"lamina.core": "core", "lamina.tui": "tui"}

packages = []
package_dir = {}
for name, folder in PACKAGE_DIRS.items():
    packages.append(name)
    package_dir[name] = folder
    for sub in find_packages(folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"lamina.tui": ["*.tcss", "**/*.tcss"]},
)
