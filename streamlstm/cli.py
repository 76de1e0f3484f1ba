"""The ``streamlstm`` command line.

Exit codes: 0 success, 1 unexpected failure, 2 bad usage or bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from streamlstm.errors import StreamLSTMError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamlstm",
        description="Keras-exact LSTM layers on PyTorch, run over live Apache Arrow streams.",
        epilog="Exit codes: 0 success, 2 bad usage or input. Run 'streamlstm COMMAND --help' for a command's options.",
    )
    from streamlstm import __version__

    parser.add_argument("--version", action="version", version=f"streamlstm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_demo(commands)
    _add_replay(commands)
    _add_serve(commands)
    _add_train(commands)
    return parser


def _add_demo(commands: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo", help="run the showcase (what 'make demo' runs)",
        description="The layers on the Keras documentation examples, then a sensor forecasting showcase: generate "
                    "a multi-stream Arrow file, train a small LSTM forecaster, save it, replay the file through "
                    "the stream runtime, and print and plot the forecasts against a last-value baseline.")
    demo.add_argument("--size", choices=("small", "full"), default="full",
                      help="dataset and training size (small: a few seconds, for tests; default: full)")
    demo.add_argument("--out", default="demo_output", metavar="DIR",
                      help="directory for the data, model, forecasts and plot (default: ./demo_output)")
    demo.add_argument("--layers", action="store_true", help="only the layers showcase")
    demo.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from streamlstm.demo import run_forecast_demo, run_layers_demo

    run_layers_demo()
    if not args.layers:
        print()
        run_forecast_demo(args.out, size=args.size)
    return 0


def _add_column_options(parser: argparse.ArgumentParser,
                        time_help: str = "per-stream increasing time, copied to the output") -> None:
    """The column options of a StreamRuntime (read by _column_options)."""
    parser.add_argument("--key", default="stream_id", help="stream key column (default: stream_id)")
    features = parser.add_mutually_exclusive_group()
    features.add_argument("--features", default=None, metavar="COL",
                          help="one FixedSizeList<float>[F] (or List<float> of F per row) features column (default: x)")
    features.add_argument("--feature-columns", default=None, metavar="A,B,C",
                          help="numeric scalar feature columns, comma-separated")
    for name, meaning in (("mask", "bool: False = masked step"), ("reset", "bool: True = zero the stream first"),
                          ("end", "bool: True = release the stream after the row"), ("time", time_help)):
        parser.add_argument(f"--{name}", default=None, metavar="COL", help=f"{name} column ({meaning})")


def _add_runtime_options(parser: argparse.ArgumentParser) -> None:
    """The StreamRuntime options every command that feeds a runtime takes (read by _runtime_options)."""
    _add_column_options(parser)
    parser.add_argument("--mode", choices=("auto", "chunk", "step"), default="auto",
                        help="runtime mode (default: auto)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    parser.add_argument("--shards", type=int, default=None, metavar="N",
                        help="run on a ShardedRuntime of N Ray actors, each owning a range of key groups "
                             "(needs pip install 'streamlstm[ray]'; default: one local runtime)")
    parser.add_argument("--ray-address", default=None, metavar="ADDR",
                        help="Ray cluster for --shards ('auto' = the one 'ray start' runs here; default: a local Ray)")
    parser.add_argument("--cpus-per-shard", type=float, default=1.0, metavar="CPUS",
                        help="CPUs Ray reserves for each shard actor (default: 1; fractions allowed)")


def _column_options(args: argparse.Namespace) -> dict:
    if args.feature_columns is not None:
        features: str | list[str] = [name.strip() for name in args.feature_columns.split(",") if name.strip()]
    else:
        features = args.features or "x"
    return {"key": args.key, "features": features, "mask": args.mask, "reset": args.reset, "end": args.end,
            "time": args.time}


def _runtime_options(args: argparse.Namespace) -> dict:
    return {**_column_options(args), "mode": args.mode, "device": args.device, "shards": args.shards,
            "ray_address": args.ray_address, "cpus_per_shard": args.cpus_per_shard}


_MODEL_HELP = "a model file written by streamlstm.save_model, or a Keras .keras/.h5 model file"


def _add_replay(commands: argparse._SubParsersAction) -> None:
    from streamlstm.io.replay import DEFAULT_BATCH_ROWS

    replay = commands.add_parser(
        "replay", help="replay an Arrow/Parquet file through a saved model, stream by stream",
        description="Feed recorded rows of many interleaved streams through a model exactly as they would have "
                    "run live, writing one output row per input row (key, time, output) in input order. "
                    "The options mirror streamlstm.replay_to_file; see its documentation.")
    replay.add_argument("input", metavar="INPUT",
                        help="Arrow IPC file, Arrow IPC stream ('-' = stdin), Parquet file, or a directory or "
                             "glob of Arrow/Parquet files (read in sorted order)")
    replay.add_argument("--model", required=True, help=_MODEL_HELP)
    replay.add_argument("--out", required=True, help="output file (.arrow or .parquet, or see --format)")
    _add_runtime_options(replay)
    replay.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS, metavar="N",
                        help=f"rows per batch fed to the runtime (default: {DEFAULT_BATCH_ROWS})")
    replay.add_argument("--checkpoint", default=None, metavar="DIR",
                        help="checkpoint directory: crash-safe and resumable with --resume")
    replay.add_argument("--checkpoint-every", type=int, default=10, metavar="N",
                        help="batches between checkpoints (default: 10)")
    replay.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint DIR")
    replay.add_argument("--format", choices=("arrow", "parquet"), default=None,
                        help="output format (default: from the --out extension)")
    replay.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    replay.set_defaults(handler=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from streamlstm.io.replay import replay_to_file

    summary = replay_to_file(
        args.input, args.model, args.out, format=args.format, checkpoint=args.checkpoint,
        checkpoint_every=args.checkpoint_every, resume=args.resume, **_runtime_options(args),
        batch_rows=args.batch_rows, progress=False if args.quiet else None)
    if not args.quiet:
        print(summary)
    return 0


def _add_serve(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="serve a saved model to live streams over Arrow Flight",
        description="Feed live record batches from any Arrow Flight client (DoExchange or DoPut with the "
                    "descriptor command 'feed') through a model, stream by stream, micro-batching concurrent "
                    "clients. Stops cleanly on SIGTERM/SIGINT (final checkpoint, exit 0). The options mirror "
                    "streamlstm.flight.serve; the protocol is in streamlstm.serve.protocol.")
    serve.add_argument("--model", required=True, help=_MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8815, help="port (default: 8815; 0 = any free port)")
    _add_runtime_options(serve)
    serve.add_argument("--checkpoint", default=None, metavar="DIR",
                       help="checkpoint directory: state survives restarts with --resume")
    serve.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                       help="seconds between checkpoints when the state changed (default: 60; 0 = only on stop)")
    serve.add_argument("--resume", action="store_true", help="continue the streams of the checkpoint in DIR")
    serve.add_argument("--max-delay-ms", type=float, default=2.0, metavar="MS",
                       help="how long a micro-batch waits for other clients' batches (default: 2)")
    serve.add_argument("--max-batch-rows", type=int, default=16384, metavar="N",
                       help="rows per micro-batch at most (default: 16384)")
    serve.add_argument("--put-buffer-rows", type=int, default=1024, metavar="N",
                       help="DoPut output rows kept per stream for DoGet (default: 1024; 0 = drop them)")
    serve.add_argument("--token-file", default=None, metavar="PATH",
                       help="file holding the bearer token every call must carry")
    serve.add_argument("--tls-cert", default=None, metavar="PATH", help="PEM certificate chain: serve TLS")
    serve.add_argument("--tls-key", default=None, metavar="PATH", help="PEM private key of --tls-cert")
    serve.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    from streamlstm.serve import serve

    return serve(args.model, host=args.host, port=args.port, **_runtime_options(args), checkpoint=args.checkpoint,
                 checkpoint_every=args.checkpoint_every, resume=args.resume, max_delay_ms=args.max_delay_ms,
                 max_batch_rows=args.max_batch_rows, put_buffer_rows=args.put_buffer_rows,
                 token_file=args.token_file, tls_cert=args.tls_cert, tls_key=args.tls_key)


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train", help="train a model on every stream of an Arrow/Parquet file (Keras stateful training)",
        description="Truncated backpropagation through time on keyed rows: each batch holds the next window of "
                    "--window rows of every stream (a Keras stateful=True fit with batch_size = the number of "
                    "streams and shuffle=False), carries restart at each epoch. Writes the trained model file. "
                    "The options mirror streamlstm.fit_streams; see its documentation.")
    train.add_argument("input", metavar="INPUT", help="Arrow IPC file, Parquet file, or a directory or glob of them")
    train.add_argument("--model", required=True, help=_MODEL_HELP + " (the starting weights)")
    train.add_argument("--out", required=True, help="the trained model file to write (streamlstm.save_model)")
    _add_column_options(train, "per-stream increasing time: each stream's rows are trained in time order")
    train.add_argument("--target", default="y", metavar="COL",
                       help="target column, FixedSizeList<float>[out_dim] (default: y); or A,B for numeric columns")
    train.add_argument("--window", type=int, default=32, metavar="K", help="rows per stream per batch (default: 32)")
    train.add_argument("--epochs", type=int, default=1, metavar="E", help="passes over the data (default: 1)")
    train.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="optimizer (default: sgd)")
    train.add_argument("--lr", type=float, default=None, help="learning rate (default: 0.01 sgd, 0.001 adam)")
    train.add_argument("--loss", choices=("mse", "mae", "huber", "binary_crossentropy"), default="mse",
                       help="per-row loss (default: mse)")
    train.add_argument("--clip-grad-norm", type=float, default=None, metavar="X",
                       help="clip the gradients' total norm before each step")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    train.add_argument("--checkpoint", default=None, metavar="DIR",
                       help="checkpoint directory: crash-safe and resumable with --resume")
    train.add_argument("--checkpoint-every", type=int, default=50, metavar="N",
                       help="batches between checkpoints (default: 50; and at each epoch end)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint DIR")
    train.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    train.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from streamlstm.io import load_model, save_model
    from streamlstm.train import fit_streams

    options = {**_column_options(args), "device": args.device}
    target = [name.strip() for name in args.target.split(",")] if "," in args.target else args.target
    trainer = fit_streams(
        load_model(args.model, device=args.device), args.input, **options, target=target, window=args.window,
        epochs=args.epochs, optimizer=args.optimizer, lr=args.lr, loss=args.loss,
        clip_grad_norm=args.clip_grad_norm, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
        resume=args.resume, progress=False if args.quiet else None)
    save_model(trainer.model, args.out)
    if not args.quiet:
        stats = trainer.stats()
        print(f"trained {stats['batches']} batches ({stats['rows']:,} rows, {stats['streams']:,} streams); "
              f"last batch loss {'-' if stats['loss'] is None else format(stats['loss'], '.6g')}; wrote {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except StreamLSTMError as exc:
        message = " ".join(str(exc).splitlines())  # one line, whatever the message
        print(f"streamlstm {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        if argv is None and args.command == "serve":
            # The server is stopped and the process only exits from here on: a late SIGINT/SIGTERM
            # (serve() restored the handlers it replaced) must not raise or kill it before its exit status.
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
