from setuptools import find_packages, setup

CORE = ["numpy==2.4.6", "flatbuffers==25.12.19", "tflite-micro==0.dev20261023182759",
        "jinja2==3.1.6", "matplotlib==3.11.2", "tqdm==4.70.1"]
KERAS = ["tensorflow==2.21.0", "tf-keras==2.21.0", "protobuf==6.33.6"]
# scipy resamples synthesised speech to 16 kHz; pillow draws and checks VWW images.
NAS = KERAS + ["tensorflow-model-optimization==0.8.1", "keras-tuner==1.4.8", "scipy==1.17.1",
               "pillow==13.0.0"]
# nbclient/nbformat/ipykernel execute the notebooks in the tests; pytest-xdist runs them on both cores.
TEST = ["pytest==9.2.0", "pytest-xdist==3.8.0", "hypothesis==6.170.15", "nbclient==0.11.0",
        "nbformat==5.11.1", "ipykernel==7.4.0"]

setup(
    name="tinyengine-tf",
    version="0.1.0",
    description="Compile int8 TFLite/Keras models to specialized, bit-exact C for microcontrollers; TinyNAS for Keras",
    python_requires=">=3.10",
    packages=find_packages(include=["tinyengine_tf", "tinyengine_tf.*", "converters", "converters.*",
                                    "nas", "nas.*"]),
    package_data={"tinyengine_tf": ["c/*.h", "templates/*"]},
    install_requires=CORE,
    extras_require={"keras": KERAS, "nas": NAS, "test": NAS + TEST, "all": NAS + TEST},
    entry_points={"console_scripts": ["tinyengine-tf = tinyengine_tf.cli:main"]},
)
