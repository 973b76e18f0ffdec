"""The tutorial's blocking slow poetry server (blocking-server/slowpoetry.py), in Python 3.

Serves one client at a time: NUM_BYTES bytes, sleep DELAY, repeat; close when the file ends.
    python3 slowpoetry.py --port 0 --delay 0.01 --num-bytes 10 POEM
"""
import argparse, os, socket, sys, time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--iface", default="localhost")
    p.add_argument("--delay", type=float, default=0.7)
    p.add_argument("--num-bytes", type=int, default=10)
    p.add_argument("poetry_file")
    args = p.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.iface, args.port))
    sock.listen(5)
    print("Serving %s on port %s." % (args.poetry_file, sock.getsockname()[1]), flush=True)
    while True:
        conn, _ = sock.accept()
        with open(args.poetry_file, "rb") as f:
            while True:
                data = f.read(args.num_bytes)
                if not data:
                    break
                try:
                    conn.sendall(data)
                except OSError:
                    break
                time.sleep(args.delay)
        conn.close()


if __name__ == "__main__":
    main()
