"""Print the backend report: ``python -m jmedseg.env``."""
from model_zoo.backend import report


def main():
    info = report()
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return info


if __name__ == "__main__":
    main()
