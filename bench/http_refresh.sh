#!/usr/bin/env bash
# Benchmark of the HTTP embedding path: ROWS text rows (default 20000), 384 dimensions, the fake
# OpenAI-compatible provider (tests/fake_provider.py, Python) on 127.0.0.1, answering at once and
# then after 150 ms per request. For each latency and each batch size b and concurrency c
# (QO_CONFIGS, default "64:1 64:4 64:8 256:4"; 64:1 is the path of 0.1.0, one request at a time):
#   C(b, c) the ceiling: a client with no database (bench/http_ceiling.py) sending the same
#           requests (b rows, c at once) to the same provider: what the provider can serve
#   W(b, c) the scheduler worker, embedder batch_size b and concurrency c: rows/s from the commit
#           of the insert to an empty queue
# and, at 0 ms and 64:4: an edit of 1,000 rows until all are fresh again (s), and an update of a
# column the embedder does not read (rows enqueued: 0 expected). Prints rows/s and W/C.
#   P(b, c) pgai's vectorizer worker (PyPI pgai 0.12.1, its SQL installed by pgai.install into the
#           same cluster; .cache/venv-pgai) on the same rows of a fresh table, the same provider,
#           batch size b and concurrency c (PGAI_CONFIGS, default "64:1 64:4 64:8 256:4"), polling
#           every second: rows/s from the commit of the insert to an empty queue; with b:c = 64:4
#           at 0 ms also the edit of 1,000 rows and the texts it re-embeds after an unrelated
#           update (counted by the provider). PGAI=0 skips it.
# Then the goals: W(64, 4) against min(C(64, 4), 4 x 64 / latency); quantops' best against pgai's
# best, overall and with 4 in flight. Waits for an empty queue run inside the server.
# Runs on a cluster of its own (port $BENCH_PORT, default 55433, in .cache/bench-cluster), reset at
# every run and stopped at the end.
# usage: bash bench/http_refresh.sh [ROWS]     (LATENCIES="0 150" by default)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ROWS=${1:-20000}
case "$ROWS" in ''|*[!0-9]*) echo "usage: bash bench/http_refresh.sh [ROWS]" >&2; exit 2;; esac
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
if [ ! -x "$PG_CONFIG" ] || [ ! -f "$($PG_CONFIG --pkglibdir)/vector.so" ]; then
  bash scripts/bootstrap.sh >/dev/null
fi
if [ ! -f "$($PG_CONFIG --pkglibdir)/quantops.so" ]; then
  bash scripts/install.sh
fi
export QUANTOPS_PORT=${BENCH_PORT:-55433}
export QUANTOPS_CLUSTER_DIR=$ROOT/.cache/bench-cluster
[ "$QUANTOPS_PORT" != 55432 ] || { echo "http_refresh.sh: port 55432 belongs to the test cluster" >&2; exit 2; }
bash scripts/cluster.sh reset >/dev/null
FAKE_PID=""
cleanup() { [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null; bash scripts/cluster.sh stop >/dev/null 2>&1 || true; }
trap cleanup EXIT
q() { bash scripts/cluster.sh psql -X -q -v ON_ERROR_STOP=1 -At "$@"; }
now() { date +%s.%N; }
calc() { python3 -c "print($1)"; }
q -c "set client_min_messages = warning" -c "create schema if not exists extensions" \
  -c "create extension if not exists vector with schema extensions" -c "create extension if not exists quantops" \
  -c "select quantops.configure(dims => 384)" >/dev/null

start_fake() { # latency_ms -> sets FAKE_URL
  local fifo; fifo=$(mktemp -u); mkfifo "$fifo"
  python3 tests/fake_provider.py 384 3600 "$1" > "$fifo" &
  FAKE_PID=$!
  read -r port < "$fifo"; rm -f "$fifo"
  FAKE_URL="http://127.0.0.1:$port/v1/embeddings"
}
# Waits inside the server (one psql for the whole wait, polling every 20 ms): a psql started
# 20 times a second takes a good part of a core that the systems measured need. Each look is a
# transaction of its own (COMMIT in the loop), so the wait holds back no vacuum or index cleanup.
wait_until() { # condition (SQL) -> returns when it holds (15 minutes at most), printing the epoch it held at
  q -c "do \$\$ declare t0 timestamptz := pg_catalog.clock_timestamp(); begin
          while not ($1) loop
            commit;
            perform pg_catalog.pg_sleep(0.02);
            if pg_catalog.clock_timestamp() - t0 > interval '15 minutes' then raise 'timed out'; end if;
          end loop; end \$\$" -c "select extract(epoch from pg_catalog.clock_timestamp())" | tail -1
}
wait_empty() { # seconds to an empty queue
  local t0=$1
  calc "$(wait_until "not exists (select 1 from quantops.embedding_queue)") - $t0"
}
# The clock starts at the insert's commit, read by the server right after it (the next
# statement, its own transaction): the insert and its trigger are the writer's work, not the
# refresh's, and the ceiling's client has its texts in memory.
committed_at() { q -c "$1" -c "select extract(epoch from pg_catalog.clock_timestamp())" | tail -1; }
insert_rows() { # prints the epoch of the insert's commit
  committed_at "insert into quantops.signal_embeddings (strategy, symbol, as_of, rationale)
        select 'bench', 'S' || g, now(), 'bench memory ' || g || ': momentum breakout above the 50 day high on volume'
        from generate_series(1, $ROWS) g"
}

# pgai's vectorizer worker, in a venv of its own (its vectorizer-worker extra without docling,
# pymupdf and the cloud SDKs, which pull torch and are not used for text in a column)
PGAI=${PGAI:-1}
PGAI_VENV=$ROOT/.cache/venv-pgai
if [ "$PGAI" = 1 ]; then
  if ! "$PGAI_VENV/bin/python" -c 'from pgai.vectorizer import Worker' 2>/dev/null; then
    python3 -m venv "$PGAI_VENV"
    "$PGAI_VENV/bin/pip" install --quiet pgai==0.12.1 "openai<2.0,>=1.44" "tiktoken<1.0,>=0.7" "langchain-text-splitters<1.0,>=0.2" \
      "pgvector<1.0,>=0.3" "ijson>=3.3.0" "filetype==1.2.0" "smart-open==7.1.0" exceptiongroup "boto3<2.0,>=1.35.0" "ollama<0.6.0,>=0.4.5" \
      "litellm<1.73.0,>=1.65.0" "voyageai<0.3.2,>=0.3.1" tokenizers "mistral-common<2.0,>=1.0"
  fi
  "$PGAI_VENV/bin/python" -c 'from pgai.vectorizer import Worker' || { echo "http_refresh.sh: pgai's worker does not import" >&2; exit 1; }
  # as on Supabase, where every role's search_path holds extensions (pgvector's schema)
  DB_URL="$(bash scripts/cluster.sh url)&options=-csearch_path%3Dpublic%2Cextensions"
  "$PGAI_VENV/bin/python" -c 'import pgai, sys; pgai.install(sys.argv[1])' "$DB_URL" >/dev/null
fi
PK=0
provider_vectors() { python3 -c "
import json, sys, urllib.request
print(json.load(urllib.request.urlopen(sys.argv[1].replace('/v1/embeddings', '/stats')))['vectors'])" "$FAKE_URL"; }
pgai_run() { # latency batch concurrency -> prints a row
  local lat=$1 b=$2 c=$3 vid wpid t0 s
  PK=$((PK + 1))
  local t=public.pgai_bench_$PK
  q -c "create table $t (id bigint generated always as identity primary key, body text not null, other int not null default 0,
                         embedding extensions.vector(384))" >/dev/null
  vid=$(q -c "set client_min_messages = warning" -c "select ai.create_vectorizer('$t'::regclass, loading => ai.loading_column('body'),
          embedding => ai.embedding_openai('fake-embed-1', 384, base_url => '${FAKE_URL%/embeddings}'),
          chunking => ai.chunking_none(), destination => ai.destination_column('embedding'), indexing => ai.indexing_none(),
          scheduling => ai.scheduling_none(), processing => ai.processing_default(batch_size => $b, concurrency => $c))")
  OPENAI_API_KEY=fake "$PGAI_VENV/bin/pgai" vectorizer worker -d "$DB_URL" -i "$vid" --poll-interval 1s -c "$c" --log-level error >/dev/null 2>&1 &
  wpid=$!
  sleep 3
  wait_pgai() {
    local t0=$1
    local t1
    t1=$(wait_until "ai.vectorizer_queue_pending($vid, exact_count => true) = 0 and not exists (select 1 from $t where embedding is null)")
    kill -0 "$wpid" 2>/dev/null || { echo "http_refresh.sh: the pgai worker exited (run it by hand to see why)" >&2; exit 1; }
    calc "$t1 - $t0"
  }
  t0=$(committed_at "insert into $t (body) select 'bench memory ' || g || ': momentum breakout above the 50 day high on volume' from generate_series(1, $ROWS) g")
  s=$(wait_pgai "$t0")
  printf "  %-10s %-9s %14s %14.0f %8s   pgai's worker\n" "${lat} ms" "$b:$c" "" "$(calc "$ROWS / $s")" ""
  best "PGAI_BEST[$lat]" "$ROWS / $s" "$b:$c"
  [ "$c" != 4 ] || best "PGAI_BEST4[$lat]" "$ROWS / $s" "$b:$c"
  if [ "$lat" = 0 ] && [ "$b:$c" = 64:4 ]; then
    t0=$(committed_at "update $t set body = body || ' (edited)' where id <= 1000")
    PGAI_EDIT_S=$(wait_pgai "$t0")
    local before; before=$(provider_vectors)
    q -c "update $t set other = other + 1" >/dev/null
    sleep 1; wait_pgai "$(now)" >/dev/null; sleep 2; wait_pgai "$(now)" >/dev/null
    PGAI_UNRELATED=$(( $(provider_vectors) - before ))
  fi
  kill "$wpid" 2>/dev/null || true; wait "$wpid" 2>/dev/null || true
}
declare -A PGAI_BEST PGAI_BEST4 QO_BEST QO_BEST4 QO_GOAL
best() { # name value label: keeps the larger as "value label"
  local v; v=$(calc "$2")
  if [ -z "${!1:-}" ] || [ "$(calc "int($v > ${!1%% *})")" = 1 ]; then printf -v "$1" '%s %s' "$v" "$3"; fi
}

echo "HTTP embedding path: $ROWS rows, 384 dimensions, $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(q -c 'select version()' | cut -d' ' -f1-2)"
printf "  %-10s %-9s %14s %14s %8s   %s\n" "latency" "batch:c" "ceiling rows/s" "worker rows/s" "W/C" "ms per request: lease / write-back"
n=0
for LAT in ${LATENCIES:-0 150}; do
  start_fake "$LAT"
  for QC in ${QO_CONFIGS:-64:1 64:4 64:8 256:4}; do
    B=${QC%%:*} C=${QC##*:}
    n=$((n + 1))
    ceiling=$(python3 bench/http_ceiling.py "$FAKE_URL" "$ROWS" "$B" "$C")
    q -c "delete from quantops.signal_embeddings where strategy = 'bench'" -c "delete from quantops.embedding_queue" >/dev/null
    q -c "select quantops.register_embedder('bench-http-$n', 'http', 384,
            jsonb_build_object('url', '$FAKE_URL', 'model', 'fake-embed-1', 'template', '{rationale}',
                               'batch_size', $B, 'concurrency', $C, 'timeout_ms', 30000), activate => true)" >/dev/null
    t0=$(insert_rows)
    s=$(wait_empty "$t0")
    done_rows=$(q -c "select count(*) from quantops.signal_embeddings where strategy = 'bench' and embedder = 'bench-http-$n'")
    [ "$done_rows" = "$ROWS" ] || { echo "http_refresh.sh: only $done_rows of $ROWS rows embedded" >&2; exit 1; }
    w=$(calc "$ROWS / $s")
    # where the main thread's time went: the lease and write-back transactions, per request
    per=$(q -c "select round(sum((details->>'lease_ms')::numeric) / greatest(sum((details->>'requests')::numeric), 1), 1) || ' / ' ||
                       round(sum((details->>'write_ms')::numeric) / greatest(sum((details->>'requests')::numeric), 1), 1)
                from quantops.job_runs where job = 'refresh-embeddings' and details->>'embedder' = 'bench-http-$n'")
    printf "  %-10s %-9s %14.0f %14.0f %8.2f   %s\n" "${LAT} ms" "$B:$C" "$ceiling" "$w" "$(calc "$w / $ceiling")" "$per"
    best "QO_BEST[$LAT]" "$w" "$B:$C"
    [ "$C" != 4 ] || best "QO_BEST4[$LAT]" "$w" "$B:$C"
    # the goal's bound: the ceiling, and at a latency also what c requests of b rows can carry
    [ "$B:$C" != 64:4 ] || QO_GOAL[$LAT]=$(calc "$w / min($ceiling, $C * $B / max($LAT, 1e-9) * 1000)")
    if [ "$LAT" = 0 ] && [ "$B:$C" = 64:4 ]; then
      t0=$(committed_at "update quantops.signal_embeddings set rationale = rationale || ' (edited)' where strategy = 'bench' and symbol in (select 'S' || g from generate_series(1, 1000) g)")
      EDIT_S=$(wait_empty "$t0")
      q -c "update quantops.signal_embeddings set features = jsonb_build_object('touched', true) where strategy = 'bench'" >/dev/null
      UNRELATED=$(q -c "select count(*) from quantops.embedding_queue")
    fi
  done
  if [ "$PGAI" = 1 ]; then
    for PC in ${PGAI_CONFIGS:-64:1 64:4 64:8 256:4}; do pgai_run "$LAT" "${PC%%:*}" "${PC##*:}"; done
  fi
  kill "$FAKE_PID" 2>/dev/null || true; FAKE_PID=""
done
if [ -n "${EDIT_S:-}" ]; then
  printf "  an edit of 1,000 rows, fresh again after: %.2f s (0 ms, c = 4)\n" "$EDIT_S"
  echo "  an update of a column the embedder does not read enqueued: $UNRELATED rows"
fi
verdict() { # ratio goal -> "met" or "NOT met"
  if [ "$(calc "int($1 >= $2)")" = 1 ]; then echo met; else echo "NOT met"; fi
}
for LAT in ${LATENCIES:-0 150}; do
  r=${QO_GOAL[$LAT]:-0}
  printf "  %s ms: quantops (batch 64, 4 in flight) at %.2fx of what the provider can serve (goal 0.8: %s)\n" "$LAT" "$r" "$(verdict "$r" 0.8)"
  if [ "$PGAI" = 1 ]; then
    r=$(calc "${QO_BEST[$LAT]%% *} / ${PGAI_BEST[$LAT]%% *}")
    printf "         quantops' best %.0f rows/s (%s) vs pgai's best %.0f (%s): %.2fx (goal 1.5: %s)\n" ${QO_BEST[$LAT]} ${PGAI_BEST[$LAT]} \
      "$r" "$(verdict "$r" 1.5)"
    r=$(calc "${QO_BEST4[$LAT]%% *} / ${PGAI_BEST4[$LAT]%% *}")
    printf "         4 in flight: quantops' best %.0f (%s) vs pgai's best %.0f (%s): %.2fx (goal 1.5: %s)\n" ${QO_BEST4[$LAT]} ${PGAI_BEST4[$LAT]} \
      "$r" "$(verdict "$r" 1.5)"
  fi
done
if [ -n "${EDIT_S:-}" ]; then
  printf "  edit -> fresh: %.2f s (goal under 1 s: %s); unrelated update re-embedded %s rows (goal 0: %s)\n" "$EDIT_S" \
    "$(verdict "1 - $EDIT_S" 1e-9)" "$UNRELATED" "$(verdict "-$UNRELATED" 0)"
fi
if [ "$PGAI" = 1 ] && [ -n "${PGAI_EDIT_S:-}" ]; then
  printf "  pgai: an edit of 1,000 rows fresh again after %.2f s; an unrelated update re-embedded %s texts\n" "$PGAI_EDIT_S" "$PGAI_UNRELATED"
fi
