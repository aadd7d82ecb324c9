/* slyctl.c — the command-line client of slyced (client/).
 *
 * Owns: option parsing, the command table and the human and --json output of
 * each command. Every request goes through libslyce. Exit status: 0 on
 * success, 1 on any error (one line "slyctl: CODE: message" on stderr), 2 on
 * a usage error (a message and the usage line on stderr).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "slyce.h"
#include "slyctl_forward.h"
#include "slyctl_fmt.h"
#include "slyctl_top.h"

#ifndef SLY_VERSION
#define SLY_VERSION "unknown"
#endif

#define USAGE_LINE                                                             \
  "usage: slyctl [--json] [-s PATH] [--timeout SECONDS] [-h|--help] "          \
  "[--version] COMMAND [ARGS]"

/* --timeout's ceiling: a day, far above any forward, well inside unsigned
 * milliseconds. */
#define CTL_TIMEOUT_MAX_S 86400

/* A handler's return value for a usage error it has already described. */
#define CTL_USAGE SLY__CTL_USAGE

typedef struct {
  sly_conn *conn;
  const char *socket; /* the path connected to, for status */
  bool json;          /* --json: print reply JSON instead of text */
} ctl;

typedef int (*ctl_fn)(ctl *x, int argc, char **argv, sly_error *err);

typedef struct {
  const char *name;
  int min_args, max_args;
  ctl_fn run;
  const char *args; /* the arguments in the usage line */
  const char *help;
  /* Checks the arguments before connecting (NULL: their count suffices);
   * returns 0 or CTL_USAGE after printing what is wrong. */
  int (*check)(int argc, char **argv);
} ctl_command;

/* Sends {"op": op}; the reply without "id" and "ok" (sly__ctl_request). */
static int ctl_request(ctl *x, const char *op, cJSON **out, sly_error *err) {
  return sly__ctl_request(x->conn, op, out, err);
}

/* ---- commands ---- */

static int cmd_status(ctl *x, int argc, char **argv, sly_error *err) {
  (void)argc, (void)argv;
  sly_hello_info h;
  sly_stats st;
  sly_slice_list *l = NULL;
  int rc;
  if (x->json) {
    cJSON *hello = NULL, *stats = NULL, *list = NULL;
    if ((rc = ctl_request(x, "hello", &hello, err)) == 0 &&
        (rc = ctl_request(x, "stats", &stats, err)) == 0 &&
        (rc = ctl_request(x, "list", &list, err)) == 0) {
      cJSON_AddStringToObject(hello, "socket", x->socket);
      cJSON_AddNumberToObject(
          hello, "slices",
          cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(list, "slices")));
      cJSON_AddNumberToObject(hello, "uptime_s", sly__ctl_jnum(stats, "uptime_s"));
      cJSON_AddNumberToObject(hello, "rss_bytes",
                              sly__ctl_jnum(stats, "process.rss_bytes"));
      sly__ctl_print_json(hello);
    }
    cJSON_Delete(hello);
    cJSON_Delete(stats);
    cJSON_Delete(list);
    return rc;
  }
  if ((rc = sly_hello(x->conn, "slyctl", &h, err)) < 0 ||
      (rc = sly_stats_get(x->conn, &st, err)) < 0 ||
      (rc = sly_list(x->conn, &l, err)) < 0)
    return rc;
  char b1[64], b2[64];
  printf("server    %s\n", h.server);
  printf("protocol  %d\n", h.protocol);
  printf("device    %s\n", h.device);
  printf("socket    %s\n", x->socket);
  printf("slices    %zu\n", l->count);
  printf("uptime    %s\n", sly__ctl_fmt_duration(st.uptime_s, b1, sizeof(b1)));
  printf("rss       %s\n", sly__ctl_fmt_bytes((double)st.rss_bytes, b2, sizeof(b2)));
  sly_slice_list_free(l);
  return 0;
}

static int cmd_list(ctl *x, int argc, char **argv, sly_error *err) {
  (void)argc, (void)argv;
  int rc;
  if (x->json) {
    cJSON *r = NULL;
    if ((rc = ctl_request(x, "list", &r, err)) == 0)
      sly__ctl_print_json(r);
    cJSON_Delete(r);
    return rc;
  }
  sly_slice_list *l = NULL;
  if ((rc = sly_list(x->conn, &l, err)) < 0)
    return rc;
  rc = sly__ctl_print_slices(l, err);
  sly_slice_list_free(l);
  return rc;
}

/* "hello 3, list 2" from an object of counts; "-" when empty. */
static void print_counts(const char *label, const cJSON *obj) {
  printf("%-13s", label);
  const cJSON *it;
  int n = 0;
  cJSON_ArrayForEach(it, obj) {
    if (cJSON_IsNumber(it))
      printf("%s%s %.0f", n++ > 0 ? ", " : "", it->string, it->valuedouble);
  }
  printf("%s\n", n == 0 ? "-" : "");
}

static int cmd_stats(ctl *x, int argc, char **argv, sly_error *err) {
  (void)argc, (void)argv;
  cJSON *r = NULL;
  int rc = ctl_request(x, "stats", &r, err);
  if (rc < 0)
    return rc;
  if (x->json) {
    sly__ctl_print_json(r);
    cJSON_Delete(r);
    return 0;
  }
  char a[64], b[64], c[64], d[64];
  printf("uptime       %s\n", sly__ctl_fmt_duration(sly__ctl_jnum(r, "uptime_s"), a, sizeof(a)));
  printf("rss          %s\n",
         sly__ctl_fmt_bytes(sly__ctl_jnum(r, "process.rss_bytes"), a, sizeof(a)));
  printf("memory       %s available of %s\n",
         sly__ctl_fmt_bytes(sly__ctl_jnum(r, "process.mem_available_bytes"), a, sizeof(a)),
         sly__ctl_fmt_bytes(sly__ctl_jnum(r, "process.mem_total_bytes"), b, sizeof(b)));
  printf("connections  %s open, %s accepted, %s rejected\n",
         sly__ctl_fmt_count(sly__ctl_jnum(r, "connections.open"), a, sizeof(a)),
         sly__ctl_fmt_count(sly__ctl_jnum(r, "connections.accepted"), b, sizeof(b)),
         sly__ctl_fmt_count(sly__ctl_jnum(r, "connections.rejected"), c, sizeof(c)));
  printf("executor     %s queued (%s staging on %s loaders), %s run while a "
         "forward waited for a slice\n",
         sly__ctl_fmt_count(sly__ctl_jnum(r, "queued"), a, sizeof(a)),
         sly__ctl_fmt_count(sly__ctl_jnum(r, "staging"), b, sizeof(b)),
         sly__ctl_fmt_count(sly__ctl_jnum(r, "loaders"), c, sizeof(c)),
         sly__ctl_fmt_count(sly__ctl_jnum(r, "interleaved"), d, sizeof(d)));
  printf("requests     %s total, %s errors\n",
         sly__ctl_fmt_count(sly__ctl_jnum(r, "requests.total"), a, sizeof(a)),
         sly__ctl_fmt_count(sly__ctl_jnum(r, "requests.errors"), b, sizeof(b)));
  printf("latency      p50 %s, p90 %s, p99 %s, max %s\n",
         sly__ctl_fmt_us(sly__ctl_jnum(r, "requests.latency_us.p50"), a, sizeof(a)),
         sly__ctl_fmt_us(sly__ctl_jnum(r, "requests.latency_us.p90"), b, sizeof(b)),
         sly__ctl_fmt_us(sly__ctl_jnum(r, "requests.latency_us.p99"), c, sizeof(c)),
         sly__ctl_fmt_us(sly__ctl_jnum(r, "requests.latency_us.max"), d, sizeof(d)));
  const cJSON *reqs = cJSON_GetObjectItemCaseSensitive(r, "requests");
  print_counts("by op", cJSON_GetObjectItemCaseSensitive(reqs, "by_op"));
  print_counts("by error", cJSON_GetObjectItemCaseSensitive(reqs, "by_error"));
  cJSON_Delete(r);
  return 0;
}

static int cmd_top(ctl *x, int argc, char **argv, sly_error *err) {
  return sly__ctl_top(x->conn, argc, argv, err);
}

/* The reload is done; keys read only at start are said on stderr, since a
 * reload that leaves a changed budget as it was would otherwise look like
 * one that applied it. */
static int cmd_reload(ctl *x, int argc, char **argv, sly_error *err) {
  (void)argc, (void)argv;
  cJSON *r = NULL;
  int rc = ctl_request(x, "reload", &r, err);
  if (rc == 0 && x->json) {
    sly__ctl_print_json(r);
  } else if (rc == 0) {
    const cJSON *later = cJSON_GetObjectItemCaseSensitive(r, "restart_needed");
    const cJSON *k;
    int n = 0;
    cJSON_ArrayForEach(k, later) {
      if (cJSON_IsString(k))
        fprintf(stderr, "%s%s", n++ ? ", " : "slyctl: changed, read only at "
                "start (the running values stay until a restart): ",
                k->valuestring);
    }
    if (n > 0)
      fputc('\n', stderr);
  }
  cJSON_Delete(r);
  return rc;
}

static int cmd_shutdown(ctl *x, int argc, char **argv, sly_error *err) {
  (void)argc, (void)argv;
  return sly_shutdown(x->conn, err);
}

static int cmd_forward(ctl *x, int argc, char **argv, sly_error *err) {
  return sly__ctl_forward(x->conn, x->json, argc, argv, err);
}

/* activate's NAME and --no-wait, in either order: 0, or CTL_USAGE after
 * saying what is wrong. */
static int activate_args(int argc, char **argv, const char **name,
                         bool *wait) {
  *name = NULL;
  *wait = true;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--no-wait") == 0) {
      *wait = false;
    } else if (argv[i][0] == '-' || *name != NULL) {
      fprintf(stderr, "slyctl: activate: %s '%s'\n",
              argv[i][0] == '-' ? "unknown option" : "a second slice name",
              argv[i]);
      goto usage;
    } else {
      *name = argv[i];
    }
  }
  if (*name != NULL)
    return 0;
  fprintf(stderr, "slyctl: activate: no slice name\n");
usage:
  fprintf(stderr, "usage: slyctl [options] activate NAME [--no-wait]\n");
  return CTL_USAGE;
}

static int check_activate(int argc, char **argv) {
  const char *name;
  bool wait;
  return activate_args(argc, argv, &name, &wait);
}

static int cmd_activate(ctl *x, int argc, char **argv, sly_error *err) {
  const char *name;
  bool wait;
  if (activate_args(argc, argv, &name, &wait) != 0)
    return CTL_USAGE;
  char tier[8];
  int rc = sly_set_active_slice(x->conn, name, wait, tier, err);
  if (rc < 0)
    return rc;
  if (x->json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "slice", name);
    cJSON_AddStringToObject(j, "tier", tier);
    sly__ctl_print_json(j);
    cJSON_Delete(j);
  } else {
    printf("%s: active, %s %s\n", name, wait ? "on" : "loading, now on",
           tier);
  }
  return 0;
}

/* CONFIG_JSON is parsed here too, so that a typo is shown where it is
 * before anything is sent. */
static int check_add_slice(int argc, char **argv) {
  if (argc < 3)
    return 0;
  const char *end = NULL;
  cJSON *j = cJSON_ParseWithOpts(argv[2], &end, true);
  bool object = cJSON_IsObject(j);
  cJSON_Delete(j);
  if (object)
    return 0;
  if (j == NULL)
    fprintf(stderr, "slyctl: add-slice: CONFIG_JSON is not JSON (error near "
            "byte %td: '%.20s')\n", end ? end - argv[2] : 0, end ? end : "");
  else
    fprintf(stderr, "slyctl: add-slice: CONFIG_JSON must be a JSON object\n");
  fprintf(stderr, "usage: slyctl [options] add-slice NAME CONSTRUCTOR "
          "[CONFIG_JSON]\n");
  return CTL_USAGE;
}

/* The tier of load, evict and pin, checked before connecting. */
static int check_tier(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "gpu") == 0 || strcmp(argv[1], "cpu") == 0 ||
      strcmp(argv[1], "disk") == 0)
    return 0;
  fprintf(stderr, "slyctl: tier '%s': expected gpu, cpu or disk\n"
          "usage: slyctl [options] load|evict|pin NAME gpu|cpu|disk\n",
          argv[1]);
  return CTL_USAGE;
}

static int cmd_add_slice(ctl *x, int argc, char **argv, sly_error *err) {
  return sly_add_slice(x->conn, argv[0], argv[1], argc > 2 ? argv[2] : NULL,
                       err);
}

static int cmd_remove_slice(ctl *x, int argc, char **argv, sly_error *err) {
  (void)argc;
  return sly_remove_slice(x->conn, argv[0], err);
}

static int cmd_tier(ctl *x, const char *op, int argc, char **argv,
                    sly_error *err) {
  char where[8] = "";
  const char *tier = argc > 1 ? argv[1] : NULL;
  int rc = strcmp(op, "load") == 0    ? sly_load(x->conn, argv[0], tier, where, err)
           : strcmp(op, "evict") == 0 ? sly_evict(x->conn, argv[0], tier, where, err)
           : strcmp(op, "pin") == 0   ? sly_pin(x->conn, argv[0], tier, err)
                                      : sly_unpin(x->conn, argv[0], err);
  if (rc < 0)
    return rc;
  if (x->json) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "slice", argv[0]);
    if (where[0] != '\0')
      cJSON_AddStringToObject(j, "tier", where);
    sly__ctl_print_json(j);
    cJSON_Delete(j);
  } else if (where[0] != '\0') {
    printf("%s: on %s\n", argv[0], where);
  }
  return 0;
}

static int cmd_load(ctl *x, int argc, char **argv, sly_error *err) {
  return cmd_tier(x, "load", argc, argv, err);
}
static int cmd_evict(ctl *x, int argc, char **argv, sly_error *err) {
  return cmd_tier(x, "evict", argc, argv, err);
}
static int cmd_pin(ctl *x, int argc, char **argv, sly_error *err) {
  return cmd_tier(x, "pin", argc, argv, err);
}
static int cmd_unpin(ctl *x, int argc, char **argv, sly_error *err) {
  return cmd_tier(x, "unpin", argc, argv, err);
}

static const ctl_command commands[] = {
    {"status", 0, 0, cmd_status, "", "server, device, socket, slices, uptime",
     NULL},
    {"list", 0, 0, cmd_list, "", "the slices and where each one is", NULL},
    {"stats", 0, 0, cmd_stats, "", "memory, connections, requests, latency",
     NULL},
    {"top", 0, 4, cmd_top, SLY__CTL_TOP_ARGS,
     "a live view: memory, moves, prefetch, slices", sly__ctl_top_check},
    {"forward", 1, 4 * SLY_MAX_TENSORS + 64, cmd_forward, SLY__CTL_FORWARD_ARGS,
     "run a slice or pipeline on .npy files", sly__ctl_forward_check},
    {"activate", 1, 2, cmd_activate, "NAME [--no-wait]",
     "set_active_slice: load NAME as a connection's default (which ends "
     "with slyctl's connection)",
     check_activate},
    {"add-slice", 2, 3, cmd_add_slice, "NAME CONSTRUCTOR [CONFIG_JSON]",
     "add a slice at run time (admin)", check_add_slice},
    {"load", 2, 2, cmd_load, "NAME gpu|cpu|disk", "bring a slice up to a tier",
     check_tier},
    {"evict", 2, 2, cmd_evict, "NAME gpu|cpu|disk",
     "leave a slice at most at a tier", check_tier},
    {"pin", 2, 2, cmd_pin, "NAME gpu|cpu|disk", "keep a slice at a tier (admin)",
     check_tier},
    {"unpin", 1, 1, cmd_unpin, "NAME", "let a pinned slice go (admin)", NULL},
    {"remove-slice", 1, 1, cmd_remove_slice, "NAME", "remove a slice (admin)",
     NULL},
    {"reload", 0, 0, cmd_reload, "", "re-read the config (admin)", NULL},
    {"shutdown", 0, 0, cmd_shutdown, "", "drain and stop slyced (admin)", NULL},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void help(void) {
  printf("%s\n\n", USAGE_LINE);
  printf("Talks to slyced over its socket (-s PATH, else $%s, else %s).\n\n",
         SLY_SOCKET_ENV, SLY_DEFAULT_SOCKET);
  printf("Options:\n"
         "  --json         print the reply as JSON (read commands, forward,\n"
         "                 activate, reload)\n"
         "  -s PATH        the socket of slyced\n"
         "  --timeout SECONDS\n"
         "                 give up (exit 1) when slyced answers nothing for\n"
         "                 this long (default: wait; at most 86400)\n"
         "  -h, --help     this help\n"
         "  --version      the version of slyctl\n\n"
         "Commands:\n");
  for (size_t i = 0; i < N_COMMANDS; i++) {
    char name[160];
    snprintf(name, sizeof(name), "%s%s%s", commands[i].name,
             commands[i].args[0] != '\0' ? " " : "", commands[i].args);
    /* A long synopsis gets a line of its own. */
    if (strlen(name) > 30)
      printf("  %s\n  %-30s %s\n", name, "", commands[i].help);
    else
      printf("  %-30s %s\n", name, commands[i].help);
  }
}

static int usage_error(const char *fmt, const char *arg) {
  if (fmt != NULL) {
    fprintf(stderr, "slyctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
  }
  fprintf(stderr, "%s\n", USAGE_LINE);
  return 2;
}

/* The path sly_connect() will use, shown by status. */
static const char *socket_shown(const char *opt) {
  if (opt != NULL)
    return opt;
  const char *env = getenv(SLY_SOCKET_ENV);
  return env != NULL && env[0] != '\0' ? env : SLY_DEFAULT_SOCKET;
}

int main(int argc, char **argv) {
  static const struct option longopts[] = {
      {"json", no_argument, NULL, 'j'},
      {"socket", required_argument, NULL, 's'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {"timeout", required_argument, NULL, 't'},
      {NULL, 0, NULL, 0}};
  ctl x = {0};
  const char *sock = NULL;
  unsigned timeout_ms = 0;
  int opt;
  /* '+': options after the command belong to the command. */
  opterr = 0; /* its messages name argv[0]; ours say "slyctl" */
  while ((opt = getopt_long(argc, argv, "+:s:h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'j':
      x.json = true;
      break;
    case 's':
      sock = optarg;
      break;
    case 'h':
      help();
      return 0;
    case 'V':
      printf("slyctl %s\n", SLY_VERSION);
      return 0;
    case 't': {
      char *end;
      errno = 0;
      double sec = strtod(optarg, &end);
      if (errno != 0 || end == optarg || *end != '\0' || !(sec > 0) ||
          sec > CTL_TIMEOUT_MAX_S)
        return usage_error("--timeout '%s': expected seconds, more than 0 "
                           "and at most 86400", optarg);
      /* Rounded up, and never to 0, which would mean no timeout. */
      timeout_ms = (unsigned)ceil(sec * 1000);
      if (timeout_ms == 0)
        timeout_ms = 1;
      break;
    }
    case ':':
      return usage_error("option '%s' needs an argument", argv[optind - 1]);
    default:
      if (optopt != 0) {
        char o[3] = {'-', (char)optopt, '\0'};
        return usage_error("unknown option '%s'", o);
      }
      return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc)
    return usage_error("no command given", NULL);
  const char *name = argv[optind];
  const ctl_command *cmd = NULL;
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0)
      cmd = &commands[i];
  if (cmd == NULL)
    return usage_error("unknown command '%s'", name);
  int nargs = argc - optind - 1;
  for (int i = optind + 1; i < argc; i++)
    if (strcmp(argv[i], "--help") == 0) {
      printf("usage: slyctl [options] %s%s%s\n%s\n", cmd->name,
             cmd->args[0] != '\0' ? " " : "", cmd->args, cmd->help);
      return 0;
    }
  if (nargs < cmd->min_args || nargs > cmd->max_args) {
    fprintf(stderr, "slyctl: wrong number of arguments for '%s'\n", name);
    fprintf(stderr, "usage: slyctl [options] %s%s%s\n", cmd->name,
            cmd->args[0] != '\0' ? " " : "", cmd->args);
    return 2;
  }

  if (cmd->check != NULL && cmd->check(nargs, argv + optind + 1) != 0)
    return 2;
  /* A view refreshed in place has no JSON form; stats --json is its data. */
  if (x.json && strcmp(cmd->name, "top") == 0)
    return usage_error("%s", "top has no --json; slyctl --json stats gives "
                             "the same figures");
  sly_error err = {0};
  x.socket = socket_shown(sock);
  int rc = sly_connect(sock, &x.conn, &err);
  if (rc == 0 && timeout_ms > 0)
    rc = sly_set_timeout(x.conn, timeout_ms, &err);
  if (rc == 0)
    rc = cmd->run(&x, nargs, argv + optind + 1, &err);
  sly_close(x.conn);
  if (rc == CTL_USAGE)
    return 2;
  if (rc < 0) {
    fflush(stdout);
    fprintf(stderr, "slyctl: %s: %s\n", sly_code_name(rc), err.message);
    return 1;
  }
  if (fflush(stdout) != 0) {
    perror("slyctl: stdout");
    return 1;
  }
  return 0;
}
