"""Parameters and GFLOPs of registered models at their default configuration, as Markdown rows.

    python tools/model_info.py                       # every model, 1x3x512x512
    python tools/model_info.py --models unet,attention_unet --size 256

GFLOPs = 2 × multiply-adds of one forward pass (see ``model_zoo.count_flops``). The rows are the
ones in model_zoo/README.md.
"""
from jmedseg.cli import new_parser, run_tool


def main(argv):
    parser = new_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated names (default: all registered)")
    parser.add_argument("--size", type=int, default=512, help="square input side")
    parser.add_argument("--in-channels", type=int, default=3, help="input image channels")
    parser.add_argument("--num-classes", type=int, default=2, help="output classes, background included")
    parser.add_argument("--no-flops", action="store_true", help="count parameters only (fast)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)

    from model_zoo import count_flops, count_parameters, create_model, list_models

    names = args.models.split(",") if args.models else list_models()
    print(f"| name | params | GFLOPs ({args.in_channels}x{args.size}x{args.size}) |")
    print("|---|---:|---:|")
    for name in names:
        model = create_model(name, in_channels=args.in_channels, num_classes=args.num_classes)
        flops = "-" if args.no_flops else f"{count_flops(model, (1, args.in_channels, args.size, args.size)) / 1e9:.2f}"
        print(f"| `{name}` | {count_parameters(model):,} | {flops} |", flush=True)
    return 0


if __name__ == "__main__":
    run_tool(main)
