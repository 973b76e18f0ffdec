"""The article's select() client (async-client/get-poetry.py), in Python 3.
    python3 get_poetry.py [host:]port ...
"""
import datetime, errno, select, socket, sys


def parse_address(addr):
    host, port = addr.split(":", 1) if ":" in addr else ("127.0.0.1", addr)
    if not port.isdigit():
        sys.exit("Ports must be integers.")
    return host, int(port)


def main():
    addresses = [parse_address(a) for a in sys.argv[1:]]
    start = datetime.datetime.now()
    sockets = []
    for address in addresses:
        s = socket.create_connection(address)
        s.setblocking(False)
        sockets.append(s)
    poems = {s: b"" for s in sockets}
    waiting = list(sockets)
    while waiting:
        rlist, _, _ = select.select(waiting, [], [])
        for sock in rlist:
            data = b""
            while True:
                try:
                    new_data = sock.recv(1024)
                except OSError as e:
                    if e.errno == errno.EWOULDBLOCK:
                        break
                    raise
                if not new_data:
                    break
                data += new_data
            if not data:
                waiting.remove(sock)
                sock.close()
            poems[sock] += data
    elapsed = datetime.datetime.now() - start
    for i, sock in enumerate(sockets):
        print("Task %d: %d bytes of poetry" % (i + 1, len(poems[sock])))
    for sock in sockets:
        sys.stdout.buffer.write(poems[sock])
    print("Got %d poems in %s" % (len(addresses), elapsed))


if __name__ == "__main__":
    main()
