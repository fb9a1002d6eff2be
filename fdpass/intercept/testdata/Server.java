// A Java server for the bind interception tests, run as a single-file
// source program (java Server.java MODE HOST PORT) or compiled.
//
// MODE is "http" (com.sun.net.httpserver.HttpServer, NIO) or "socket"
// (java.net.ServerSocket, a pool of 8 threads); HOST "*" binds the wildcard
// the JVM's way. Every request is answered "200 ok". Once listening it
// prints "listening LOCAL" (the address the JVM reads back with
// getsockname). A "stop" line on stdin or SIGTERM stops it gracefully: no
// new connection is accepted, every accepted one is answered, then it
// prints "served N" and exits.
import com.sun.net.httpserver.HttpServer;
import java.io.*;
import java.net.*;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.*;
import java.util.concurrent.atomic.AtomicLong;

public class Server {
    static final AtomicLong served = new AtomicLong();
    static final byte[] OK = "ok\n".getBytes(StandardCharsets.US_ASCII);

    public static void main(String[] args) throws Exception {
        String mode = args[0], host = args[1];
        int port = Integer.parseInt(args[2]);
        InetSocketAddress addr = host.equals("*") ? new InetSocketAddress(port) : new InetSocketAddress(host, port);
        ExecutorService pool = Executors.newFixedThreadPool(8);
        Runnable stop;
        if (mode.equals("http")) {
            HttpServer s = HttpServer.create(addr, 0);
            s.createContext("/", ex -> {
                served.incrementAndGet();
                ex.sendResponseHeaders(200, OK.length);
                ex.getResponseBody().write(OK);
                ex.close();
            });
            s.setExecutor(pool);
            s.start();
            System.out.println("listening " + s.getAddress());
            stop = () -> s.stop(1);
        } else {
            ServerSocket ss = new ServerSocket();
            ss.bind(addr);
            System.out.println("listening " + ss.getLocalSocketAddress());
            Thread t = new Thread(() -> acceptLoop(ss, pool));
            t.setDaemon(true);
            t.start();
            stop = () -> { // the accept loop hands its last connection to the pool before the pool stops
                try {
                    ss.close();
                    t.join(10_000);
                } catch (IOException | InterruptedException e) {
                }
            };
        }
        Runnable graceful = stop;
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            graceful.run();
            pool.shutdown();
            try {
                pool.awaitTermination(10, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
            }
            System.out.println("served " + served.get());
            System.out.flush();
        }));
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String l; (l = in.readLine()) != null; ) {
            if (l.equals("stop")) {
                System.exit(0);
            }
        }
        new CountDownLatch(1).await(); // stdin closed: serve until SIGTERM
    }

    static void acceptLoop(ServerSocket ss, ExecutorService pool) {
        while (true) {
            Socket c;
            try {
                c = ss.accept();
            } catch (IOException e) {
                return; // closed
            }
            pool.execute(() -> serve(c));
        }
    }

    static void serve(Socket c) {
        try (c) {
            BufferedReader r = new BufferedReader(new InputStreamReader(c.getInputStream(), StandardCharsets.US_ASCII));
            for (String l; (l = r.readLine()) != null && !l.isEmpty(); ) { }
            OutputStream w = c.getOutputStream();
            w.write(("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
            w.write(OK);
            w.flush();
            served.incrementAndGet();
        } catch (IOException e) {
            System.err.println("serve " + c + ": " + e);
        }
    }
}
