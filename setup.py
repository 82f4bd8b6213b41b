from setuptools import find_packages, setup

setup(
    name="jmedseg",
    version="0.1.0",
    description="2D medical image segmentation model zoo and toolkit on Jittor",
    packages=find_packages(include=["jmedseg", "jmedseg.*", "model_zoo", "model_zoo.*"]),
    python_requires=">=3.9",
    install_requires=[
        "jittor==1.3.11.0",
        # oneDNN 2.x for Jittor's CPU convolutions (set up by model_zoo.backend; 3.x has another API).
        "onednn-cpu-gomp==2022.2.1",
        "onednn-devel-cpu-gomp==2022.2.1",
        "numpy>=1.23,<2",
        "opencv-python-headless>=4.6",
        "pyyaml>=6",
        "tqdm>=4.60",
        "scikit-learn>=1.1",
        "scipy>=1.9",
        "pillow>=9",
    ],
    extras_require={"test": ["pytest>=7", "hypothesis>=6"]},
)
