/*
 * A fake libnvidia-ml.so.1 for tests: it exports the C symbols nvidia-ml-py 13
 * (pynvml) really calls, with nvml.h's struct layouts, so the real ctypes layer
 * runs on a machine without a GPU.
 *
 * Behaviour comes from a text file named by $FAKE_NVML_CONFIG, read at every
 * nvmlInitWithFlags (unset: built-in defaults, 8x "NVIDIA H100 80GB HBM3").
 * One "key = value" per line, '#' starts a comment. A key may be prefixed with
 * "gpu.N." to apply to GPU N only; a GPU-specific key wins over the plain key,
 * which wins over the built-in default. See build.py for the list of keys.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef int nvmlReturn_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25
#define NVML_ERROR_UNKNOWN 999

#define MAX_GPUS 64
#define MAX_MIG 7
#define MAX_LINKS 36
#define MAX_ENTRIES 256

/* ---- struct layouts, as in nvml.h and pynvml's ctypes definitions ---- */

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    int sensorType;
    int temperature;
} nvmlTemperature_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

/* nvmlGpuFabricInfo_v2_t (nvmlDeviceGetGpuFabricInfoV) and the older v1 layout. */
typedef struct {
    unsigned int version;
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned int state;
    unsigned int healthMask;
} nvmlGpuFabricInfoV_t;

typedef struct {
    unsigned char clusterUuid[16];
    nvmlReturn_t status;
    unsigned int cliqueId;
    unsigned int state;
} nvmlGpuFabricInfo_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef union {
    double dVal;
    unsigned int uiVal;
    unsigned long ulVal;
    unsigned long long ullVal;
    long long sllVal;
    int siVal;
    unsigned short usVal;
} nvmlValue_t;

typedef struct {
    unsigned int fieldId;
    unsigned int scopeId;
    long long timestamp;
    long long latencyUsec;
    int valueType;
    nvmlReturn_t nvmlReturn;
    nvmlValue_t value;
} nvmlFieldValue_t;

/* An opaque handle for pynvml: a pointer into one of these arrays. */
typedef struct {
    int gpu;
    int mig; /* -1: the physical GPU; else the MIG slot */
} fake_device;

typedef fake_device *nvmlDevice_t;

static fake_device physical[MAX_GPUS];
static fake_device migdev[MAX_GPUS][MAX_MIG];

/* ---- configuration ---- */

static char keys[MAX_ENTRIES][128];
static char values[MAX_ENTRIES][1024];
static int n_entries;
static int init_count;
static int gpu_count;

static const char *const defaults[][2] = {
    {"gpu_count", "8"},
    {"name", "NVIDIA H100 80GB HBM3"},
    {"driver_version", "575.57.08"},
    {"nvml_version", "12.575.57.08"},
    {"cuda_version", "12090"},
    {"memory_total_mib", "81559"},
    {"memory_used_mib", "0"},
    {"pci_device_id", "0x233010DE"},
    {"pci_subsystem_id", "0x16C110DE"},
    {"vbios_version", "96.00.99.00.01"},
    {"compute_capability", "9.0"},
    {"persistence_mode", "1"},
    {"power_w", "71.5"},
    {"power_limit_w", "700"},
    {"power_default_limit_w", "700"},
    {"power_min_limit_w", "200"},
    {"power_max_limit_w", "700"},
    {"app_sm_clock", "1980"},
    {"app_mem_clock", "2619"},
    {"pcie_gen", "5"},
    {"pcie_gen_max", "5"},
    {"pcie_width", "16"},
    {"pcie_width_max", "16"},
    {"util_gpu", "0"},
    {"fabric_state", "3"}, /* COMPLETED: Fabric Manager registered the GPU (HGX H100) */
    {"fabric_status", "0"},
    {"fabric_clique", "1"},
    {"fabric_health_mask", "2"}, /* degraded bandwidth: false */
    {"util_memory", "0"},
    {"temperature", "33"},
    {"temp_slowdown", "89"},
    {"temp_shutdown", "92"},
    {"sm_clock", "345"},
    {"mem_clock", "2619"},
    {"sm_clock_max", "1980"},
    {"mem_clock_max", "2619"},
    {"clock_event_reasons", "0x1"},
    {"ecc_mode", "1"},
    {"ecc_volatile_uncorrected", "0"},
    {"ecc_volatile_corrected", "0"},
    {"ecc_aggregate_uncorrected", "0"},
    {"ecc_aggregate_corrected", "0"},
    {"retired_sbe", "0"},
    {"retired_dbe", "0"},
    {"retired_pending", "0"},
    {"remap_corrected", "0"},
    {"remap_uncorrected", "0"},
    {"remap_pending", "0"},
    {"remap_failure", "0"},
    {"pcie_replay", "0"},
    {"nvlink_count", "18"},
    {"nvlink_remote", "switch"},
    {"recovery_action", "0"},
    /* Ampere and later retire rows, not pages: H100 says NOT_SUPPORTED here. */
    {"unsupported", "nvmlDeviceGetRetiredPages,nvmlDeviceGetRetiredPagesPendingStatus"},
    {NULL, NULL},
};

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1])) *--end = '\0';
    return s;
}

static struct stat loaded; /* the config file as last read, for "live = 1" */

static int load_config(void) {
    n_entries = 0;
    const char *path = getenv("FAKE_NVML_CONFIG");
    if (path == NULL || *path == '\0') return 0;
    FILE *f = fopen(path, "r");
    if (f != NULL && fstat(fileno(f), &loaded) != 0) memset(&loaded, 0, sizeof loaded);
    if (f == NULL) {
        fprintf(stderr, "fake_nvml: cannot read FAKE_NVML_CONFIG=%s\n", path);
        return -1;
    }
    char line[1200];
    while (fgets(line, sizeof line, f) != NULL && n_entries < MAX_ENTRIES) {
        char *hash = strchr(line, '#');
        if (hash != NULL) *hash = '\0';
        char *eq = strchr(line, '=');
        if (eq == NULL) continue;
        *eq = '\0';
        char *k = trim(line), *v = trim(eq + 1);
        if (*k == '\0') continue;
        snprintf(keys[n_entries], sizeof keys[0], "%s", k);
        snprintf(values[n_entries], sizeof values[0], "%s", v);
        n_entries++;
    }
    fclose(f);
    return 0;
}

static const char *lookup(const char *key);

/* "live = 1": re-read the config when the file is replaced, so a test can change
   readings (or lose a GPU) in the middle of a session. */
static void maybe_reload(void) {
    const char *live = lookup("live");
    if (live == NULL || strtol(live, NULL, 0) == 0) return;
    struct stat now;
    const char *path = getenv("FAKE_NVML_CONFIG");
    if (path == NULL || stat(path, &now) != 0) return;
    if (now.st_ino != loaded.st_ino || now.st_mtim.tv_sec != loaded.st_mtim.tv_sec ||
        now.st_mtim.tv_nsec != loaded.st_mtim.tv_nsec || now.st_size != loaded.st_size)
        load_config();
}

static const char *lookup(const char *key) {
    /* Last assignment wins, as in a shell env file. */
    for (int i = n_entries - 1; i >= 0; i--)
        if (strcmp(keys[i], key) == 0) return values[i];
    return NULL;
}

static const char *builtin(const char *key) {
    for (int i = 0; defaults[i][0] != NULL; i++)
        if (strcmp(defaults[i][0], key) == 0) return defaults[i][1];
    return NULL;
}

/* GPU-specific key, then the plain key, then the built-in default. */
static const char *cfg(int gpu, const char *key) {
    char full[160];
    if (gpu >= 0) {
        snprintf(full, sizeof full, "gpu.%d.%s", gpu, key);
        const char *v = lookup(full);
        if (v != NULL) return v;
    }
    const char *v = lookup(key);
    return v != NULL ? v : builtin(key);
}

static double cfg_num(int gpu, const char *key) {
    const char *v = cfg(gpu, key);
    return v != NULL ? strtod(v, NULL) : 0.0;
}

static unsigned long long cfg_ull(int gpu, const char *key) {
    const char *v = cfg(gpu, key);
    return v != NULL ? strtoull(v, NULL, 0) : 0ULL;
}

/* Is `name` one of the comma-separated items of `list`? */
static int in_list(const char *list, const char *name) {
    if (list == NULL) return 0;
    size_t n = strlen(name);
    const char *p = list;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p)) p++;
        const char *start = p;
        while (*p && *p != ',') p++;
        const char *end = p;
        while (end > start && isspace((unsigned char)end[-1])) end--;
        if ((size_t)(end - start) == n && strncmp(start, name, n) == 0) return 1;
    }
    return 0;
}

/* "sym:code,sym:code": the code for `name`, or 0. */
static int fail_code(const char *list, const char *name) {
    if (list == NULL) return 0;
    size_t n = strlen(name);
    const char *p = list;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p)) p++;
        if (strncmp(p, name, n) == 0 && p[n] == ':') return (int)strtol(p + n + 1, NULL, 0);
        while (*p && *p != ',') p++;
    }
    return 0;
}

static int gpu_key_in_list(int gpu, const char *key, const char *name) {
    char full[160];
    snprintf(full, sizeof full, "gpu.%d.%s", gpu, key);
    const char *global = lookup(key);
    if (global == NULL) global = builtin(key);
    return in_list(lookup(full), name) || in_list(global, name);
}

static int gpu_fail_code(int gpu, const char *name) {
    char full[160];
    snprintf(full, sizeof full, "gpu.%d.fail", gpu);
    int code = fail_code(lookup(full), name);
    return code != 0 ? code : fail_code(lookup("fail"), name);
}

static void maybe_sleep(int gpu, const char *fn) {
    double seconds = cfg_num(gpu, "sleep_s");
    if (seconds <= 0) return;
    const char *only = cfg(gpu, "sleep_on");
    if (only != NULL && *only != '\0' && !in_list(only, fn)) return;
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int valid_handle(nvmlDevice_t d) {
    if (d == NULL) return 0;
    if (d >= physical && d < physical + MAX_GPUS) return d->gpu < gpu_count;
    if (d >= &migdev[0][0] && d < &migdev[0][0] + MAX_GPUS * MAX_MIG) return d->gpu < gpu_count;
    return 0;
}

/* Common prologue of every device query: the configured fault for (GPU, function). */
static nvmlReturn_t enter(nvmlDevice_t d, const char *fn) {
    if (init_count <= 0) return NVML_ERROR_UNINITIALIZED;
    if (!valid_handle(d)) return NVML_ERROR_INVALID_ARGUMENT;
    maybe_reload();
    int gpu = d->gpu;
    maybe_sleep(gpu, fn);
    if (cfg_ull(gpu, "lost")) return NVML_ERROR_GPU_IS_LOST;
    int code = gpu_fail_code(gpu, fn);
    if (code != 0) return code;
    if (gpu_key_in_list(gpu, "unsupported", fn)) return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

#define ENTER(d)                                  \
    do {                                          \
        nvmlReturn_t rc_ = enter((d), __func__);  \
        if (rc_ != NVML_SUCCESS) return rc_;      \
    } while (0)

#define NEED(p)                                                   \
    do {                                                          \
        if ((p) == NULL) return NVML_ERROR_INVALID_ARGUMENT;      \
    } while (0)

static nvmlReturn_t put_string(char *buf, unsigned int length, const char *s) {
    NEED(buf);
    if (strlen(s) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(buf, s, strlen(s) + 1);
    return NVML_SUCCESS;
}

/* ---- identity derived from the index, deterministic ---- */

static unsigned int mix(unsigned int x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static const unsigned int default_bus[8] = {0x1B, 0x43, 0x52, 0x61, 0x9D, 0xC3, 0xD1, 0xDF};

static void fill_pci(int gpu, nvmlPciInfo_t *pci) {
    memset(pci, 0, sizeof *pci);
    pci->domain = (unsigned int)(gpu / 8);
    pci->bus = cfg(gpu, "pci_bus") != NULL ? (unsigned int)cfg_ull(gpu, "pci_bus")
                                           : default_bus[gpu % 8];
    pci->device = 0;
    pci->pciDeviceId = (unsigned int)cfg_ull(gpu, "pci_device_id");
    pci->pciSubSystemId = (unsigned int)cfg_ull(gpu, "pci_subsystem_id");
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.0", pci->domain, pci->bus,
             pci->device);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.0", pci->domain,
             pci->bus, pci->device);
}

static void make_uuid(int gpu, int mig, char *out, size_t size) {
    const char *v = mig < 0 ? cfg(gpu, "uuid") : NULL;
    if (v != NULL) {
        snprintf(out, size, "%s", v);
        return;
    }
    unsigned int seed = 0x9e3779b9u + (unsigned int)cfg_ull(-1, "uuid_seed") + (unsigned int)gpu * 131u +
                        (unsigned int)(mig + 1) * 7919u;
    unsigned int a = mix(seed), b = mix(a), c = mix(b), d = mix(c);
    snprintf(out, size, "%s-%08x-%04x-%04x-%04x-%04x%08x", mig < 0 ? "GPU" : "MIG", a,
             b & 0xffff, (b >> 16) & 0xffff, c & 0xffff, (c >> 16) & 0xffff, d);
}

/* ---- MIG: "gpu.N.mig = 3g.40gb,3g.40gb" lists the instances ---- */

static int mig_profiles(int gpu, char out[MAX_MIG][32]) {
    const char *list = cfg(gpu, "mig");
    int n = 0;
    if (list == NULL) return 0;
    const char *p = list;
    while (*p && n < MAX_MIG) {
        while (*p == ',' || isspace((unsigned char)*p)) p++;
        const char *start = p;
        while (*p && *p != ',') p++;
        const char *end = p;
        while (end > start && isspace((unsigned char)end[-1])) end--;
        if (end > start) {
            snprintf(out[n], 32, "%.*s", (int)(end - start), start);
            n++;
        }
    }
    return n;
}

static unsigned long long mig_memory_mib(const char *profile) {
    const char *dot = strchr(profile, '.');
    return dot != NULL ? strtoull(dot + 1, NULL, 10) * 1024ULL : 0ULL;
}

/* ---- library ---- */

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    if (load_config() != 0) return NVML_ERROR_UNKNOWN;
    int code = (int)cfg_ull(-1, "init_error");
    if (code != 0) return code;
    gpu_count = (int)cfg_ull(-1, "gpu_count");
    if (gpu_count > MAX_GPUS) gpu_count = MAX_GPUS;
    if (gpu_count < 0) gpu_count = 0;
    for (int g = 0; g < MAX_GPUS; g++) {
        physical[g].gpu = g;
        physical[g].mig = -1;
        for (int m = 0; m < MAX_MIG; m++) {
            migdev[g][m].gpu = g;
            migdev[g][m].mig = m;
        }
    }
    init_count++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    if (init_count <= 0) return NVML_ERROR_UNINITIALIZED;
    init_count--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (init_count <= 0) return NVML_ERROR_UNINITIALIZED;
    return put_string(version, length, cfg(-1, "driver_version"));
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    if (init_count <= 0) return NVML_ERROR_UNINITIALIZED;
    return put_string(version, length, cfg(-1, "nvml_version"));
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *version) {
    NEED(version);
    *version = (int)cfg_ull(-1, "cuda_version");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *version) {
    return nvmlSystemGetCudaDriverVersion(version);
}

/* "pid:name:MiB,pid:name:MiB" — finds pid; fills name and MiB when asked. */
static int find_process(const char *list, unsigned int pid, char *name, size_t size,
                        unsigned long long *mib) {
    if (list == NULL) return 0;
    const char *p = list;
    while (*p) {
        while (*p == ',' || isspace((unsigned char)*p)) p++;
        char *end;
        unsigned long this_pid = strtoul(p, &end, 10);
        const char *colon = strchr(end, ':');
        const char *comma = strchr(end, ',');
        if (this_pid == pid && colon != NULL && (comma == NULL || colon < comma)) {
            const char *second = strchr(colon + 1, ':');
            if (second != NULL && (comma == NULL || second < comma)) {
                if (name != NULL) snprintf(name, size, "%.*s", (int)(second - colon - 1), colon + 1);
                if (mib != NULL) *mib = strtoull(second + 1, NULL, 10);
                return 1;
            }
        }
        if (comma == NULL) break;
        p = comma + 1;
    }
    return 0;
}

nvmlReturn_t nvmlSystemGetProcessName(unsigned int pid, char *name, unsigned int length) {
    if (init_count <= 0) return NVML_ERROR_UNINITIALIZED;
    char found[256];
    for (int g = 0; g < gpu_count; g++) {
        if (find_process(cfg(g, "processes"), pid, found, sizeof found, NULL) ||
            find_process(cfg(g, "graphics_processes"), pid, found, sizeof found, NULL))
            return put_string(name, length, found);
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (init_count <= 0) return NVML_ERROR_UNINITIALIZED;
    NEED(count);
    *count = (unsigned int)gpu_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (init_count <= 0) return NVML_ERROR_UNINITIALIZED;
    NEED(device);
    if (index >= (unsigned int)gpu_count) return NVML_ERROR_INVALID_ARGUMENT;
    int g = (int)index;
    maybe_reload();
    maybe_sleep(g, __func__);
    int code = (int)cfg_ull(g, "handle_error");
    if (code != 0) return code;
    *device = &physical[g];
    return NVML_SUCCESS;
}

/* ---- static facts ---- */

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    ENTER(d);
    char buf[160];
    if (d->mig < 0) return put_string(name, length, cfg(d->gpu, "name"));
    char profiles[MAX_MIG][32];
    int n = mig_profiles(d->gpu, profiles);
    if (d->mig >= n) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(buf, sizeof buf, "%s MIG %s", cfg(d->gpu, "name"), profiles[d->mig]);
    return put_string(name, length, buf);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    ENTER(d);
    char buf[96];
    make_uuid(d->gpu, d->mig, buf, sizeof buf);
    return put_string(uuid, length, buf);
}

nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t d, char *serial, unsigned int length) {
    ENTER(d);
    const char *v = cfg(d->gpu, "serial");
    char buf[32];
    if (v == NULL) {
        snprintf(buf, sizeof buf, "16549220%05u", (mix(1000u + (unsigned int)d->gpu) % 100000u));
        v = buf;
    }
    return put_string(serial, length, v);
}

nvmlReturn_t nvmlDeviceGetVbiosVersion(nvmlDevice_t d, char *version, unsigned int length) {
    ENTER(d);
    return put_string(version, length, cfg(d->gpu, "vbios_version"));
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *pci) {
    ENTER(d);
    NEED(pci);
    fill_pci(d->gpu, pci);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t d, int *major, int *minor) {
    ENTER(d);
    NEED(major);
    NEED(minor);
    const char *v = cfg(d->gpu, "compute_capability");
    char *dot;
    *major = (int)strtol(v, &dot, 10);
    *minor = *dot == '.' ? (int)strtol(dot + 1, NULL, 10) : 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory) {
    ENTER(d);
    NEED(memory);
    unsigned long long total_mib = cfg_ull(d->gpu, "memory_total_mib");
    unsigned long long used_mib = cfg_ull(d->gpu, "memory_used_mib");
    if (d->mig >= 0) {
        char profiles[MAX_MIG][32];
        int n = mig_profiles(d->gpu, profiles);
        if (d->mig >= n) return NVML_ERROR_INVALID_ARGUMENT;
        total_mib = mig_memory_mib(profiles[d->mig]);
        used_mib = 0;
    }
    memory->total = total_mib << 20;
    memory->used = used_mib << 20;
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t d, unsigned int *mode) {
    ENTER(d);
    NEED(mode);
    *mode = (unsigned int)cfg_ull(d->gpu, "persistence_mode");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t d, unsigned int *limit) {
    ENTER(d);
    NEED(limit);
    *limit = (unsigned int)(cfg_num(d->gpu, "power_limit_w") * 1000.0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t d, unsigned int *limit) {
    ENTER(d);
    NEED(limit);
    *limit = (unsigned int)(cfg_num(d->gpu, "power_default_limit_w") * 1000.0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t d, unsigned int *min_limit,
                                                          unsigned int *max_limit) {
    ENTER(d);
    NEED(min_limit);
    NEED(max_limit);
    *min_limit = (unsigned int)(cfg_num(d->gpu, "power_min_limit_w") * 1000.0);
    *max_limit = (unsigned int)(cfg_num(d->gpu, "power_max_limit_w") * 1000.0);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *utilization) {
    ENTER(d);
    NEED(utilization);
    utilization->gpu = (unsigned int)cfg_ull(d->gpu, "util_gpu");
    utilization->memory = (unsigned int)cfg_ull(d->gpu, "util_memory");
    return NVML_SUCCESS;
}

/* ---- NVLink fabric (Fabric Manager) ---- */

nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t d, nvmlGpuFabricInfoV_t *info) {
    ENTER(d);
    NEED(info);
    if (info->version != 0x02000024) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    memset(info->clusterUuid, 0xab, sizeof info->clusterUuid);
    info->status = (nvmlReturn_t)cfg_ull(d->gpu, "fabric_status");
    info->cliqueId = (unsigned int)cfg_ull(d->gpu, "fabric_clique");
    info->state = (unsigned int)cfg_ull(d->gpu, "fabric_state");
    info->healthMask = (unsigned int)cfg_ull(d->gpu, "fabric_health_mask");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuFabricInfo(nvmlDevice_t d, nvmlGpuFabricInfo_t *info) {
    ENTER(d);
    NEED(info);
    memset(info->clusterUuid, 0xab, sizeof info->clusterUuid);
    info->status = (nvmlReturn_t)cfg_ull(d->gpu, "fabric_status");
    info->cliqueId = (unsigned int)cfg_ull(d->gpu, "fabric_clique");
    info->state = (unsigned int)cfg_ull(d->gpu, "fabric_state");
    return NVML_SUCCESS;
}

/* ---- PCIe link: current (trains down at idle on real GPUs) and max ---- */

static nvmlReturn_t pcie_value(nvmlDevice_t d, const char *fn, const char *key,
                               unsigned int *out) {
    nvmlReturn_t rc = enter(d, fn);
    if (rc != NVML_SUCCESS) return rc;
    NEED(out);
    *out = (unsigned int)cfg_ull(d->gpu, key);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t d, unsigned int *gen) {
    return pcie_value(d, __func__, "pcie_gen", gen);
}

nvmlReturn_t nvmlDeviceGetMaxPcieLinkGeneration(nvmlDevice_t d, unsigned int *gen) {
    return pcie_value(d, __func__, "pcie_gen_max", gen);
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t d, unsigned int *width) {
    return pcie_value(d, __func__, "pcie_width", width);
}

nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t d, unsigned int *width) {
    return pcie_value(d, __func__, "pcie_width_max", width);
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *power) {
    ENTER(d);
    NEED(power);
    *power = (unsigned int)(cfg_num(d->gpu, "power_w") * 1000.0);
    return NVML_SUCCESS;
}

static const char *clock_key(int type, int max) {
    if (type == 1) return max ? "sm_clock_max" : "sm_clock";  /* NVML_CLOCK_SM */
    if (type == 2) return max ? "mem_clock_max" : "mem_clock"; /* NVML_CLOCK_MEM */
    if (type == 0) return max ? "sm_clock_max" : "sm_clock";  /* NVML_CLOCK_GRAPHICS */
    return NULL;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *clock) {
    ENTER(d);
    NEED(clock);
    const char *key = clock_key(type, 0);
    if (key == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *clock = (unsigned int)cfg_ull(d->gpu, key);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetApplicationsClock(nvmlDevice_t d, int type, unsigned int *clock) {
    ENTER(d);
    NEED(clock);
    if (type == 0 || type == 1) *clock = (unsigned int)cfg_ull(d->gpu, "app_sm_clock");
    else if (type == 2) *clock = (unsigned int)cfg_ull(d->gpu, "app_mem_clock");
    else return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t d, int type, unsigned int *clock) {
    ENTER(d);
    NEED(clock);
    const char *key = clock_key(type, 1);
    if (key == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *clock = (unsigned int)cfg_ull(d->gpu, key);
    return NVML_SUCCESS;
}

/* ---- MIG ---- */

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    ENTER(d);
    NEED(current);
    NEED(pending);
    char profiles[MAX_MIG][32];
    int on = mig_profiles(d->gpu, profiles) > 0 || cfg_ull(d->gpu, "mig_mode");
    *current = (unsigned int)on;
    *pending = cfg(d->gpu, "mig_pending") != NULL ? (unsigned int)cfg_ull(d->gpu, "mig_pending")
                                                  : (unsigned int)on;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    ENTER(d);
    NEED(count);
    *count = MAX_MIG;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index,
                                                 nvmlDevice_t *mig) {
    ENTER(d);
    NEED(mig);
    if (d->mig >= 0 || index >= MAX_MIG) return NVML_ERROR_INVALID_ARGUMENT;
    char profiles[MAX_MIG][32];
    if ((int)index >= mig_profiles(d->gpu, profiles)) return NVML_ERROR_NOT_FOUND;
    *mig = &migdev[d->gpu][index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id) {
    ENTER(d);
    NEED(id);
    if (d->mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *id = (unsigned int)d->mig + 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t d, unsigned int *id) {
    ENTER(d);
    NEED(id);
    if (d->mig < 0) return NVML_ERROR_INVALID_ARGUMENT;
    *id = 0;
    return NVML_SUCCESS;
}

/* ---- health ---- */

#define NVML_TEMPERATURE_GPU 0
#define NVML_TEMPERATURE_THRESHOLD_SHUTDOWN 0
#define NVML_TEMPERATURE_THRESHOLD_SLOWDOWN 1
#define NVML_TEMPERATURE_V1 0x100000CU

nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t d, nvmlTemperature_t *temperature) {
    ENTER(d);
    NEED(temperature);
    if (temperature->version != NVML_TEMPERATURE_V1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (temperature->sensorType != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    temperature->temperature = (int)cfg_num(d->gpu, "temperature");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *temperature) {
    ENTER(d);
    NEED(temperature);
    if (sensor != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    *temperature = (unsigned int)cfg_num(d->gpu, "temperature");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t d, int threshold,
                                               unsigned int *temperature) {
    ENTER(d);
    NEED(temperature);
    if (threshold == NVML_TEMPERATURE_THRESHOLD_SHUTDOWN)
        *temperature = (unsigned int)cfg_ull(d->gpu, "temp_shutdown");
    else if (threshold == NVML_TEMPERATURE_THRESHOLD_SLOWDOWN)
        *temperature = (unsigned int)cfg_ull(d->gpu, "temp_slowdown");
    else
        return NVML_ERROR_NOT_SUPPORTED;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t d, unsigned long long *reasons) {
    ENTER(d);
    NEED(reasons);
    *reasons = cfg_ull(d->gpu, "clock_event_reasons");
    return NVML_SUCCESS;
}

/* The deprecated name (drivers before R535), for the fallback path. */
nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t d, unsigned long long *reasons) {
    ENTER(d);
    NEED(reasons);
    *reasons = cfg_ull(d->gpu, "clock_event_reasons");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    ENTER(d);
    NEED(current);
    NEED(pending);
    *current = (unsigned int)cfg_ull(d->gpu, "ecc_mode");
    *pending = cfg(d->gpu, "ecc_pending") != NULL ? (unsigned int)cfg_ull(d->gpu, "ecc_pending")
                                                  : *current;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int error_type, int counter_type,
                                         unsigned long long *count) {
    ENTER(d);
    NEED(count);
    static const char *const names[2][2] = {
        /* [error_type: 0 corrected, 1 uncorrected][counter_type: 0 volatile, 1 aggregate] */
        {"ecc_volatile_corrected", "ecc_aggregate_corrected"},
        {"ecc_volatile_uncorrected", "ecc_aggregate_uncorrected"},
    };
    if (error_type < 0 || error_type > 1 || counter_type < 0 || counter_type > 1)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!cfg_ull(d->gpu, "ecc_mode")) return NVML_ERROR_NOT_SUPPORTED;
    *count = cfg_ull(d->gpu, names[error_type][counter_type]);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRetiredPages(nvmlDevice_t d, int cause, unsigned int *count,
                                       unsigned long long *addresses) {
    ENTER(d);
    NEED(count);
    /* cause 0: multiple single-bit errors, 1: double-bit error */
    if (cause < 0 || cause > 1) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int n = (unsigned int)cfg_ull(d->gpu, cause == 0 ? "retired_sbe" : "retired_dbe");
    if (addresses == NULL || *count < n) {
        *count = n;
        return n == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (unsigned int i = 0; i < n; i++) addresses[i] = 0x7f0000ULL + 0x1000ULL * i;
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t d, unsigned int *pending) {
    ENTER(d);
    NEED(pending);
    *pending = (unsigned int)cfg_ull(d->gpu, "retired_pending");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t d, unsigned int *corrected,
                                       unsigned int *uncorrected, unsigned int *pending,
                                       unsigned int *failure) {
    ENTER(d);
    NEED(corrected);
    NEED(uncorrected);
    NEED(pending);
    NEED(failure);
    *corrected = (unsigned int)cfg_ull(d->gpu, "remap_corrected");
    *uncorrected = (unsigned int)cfg_ull(d->gpu, "remap_uncorrected");
    *pending = (unsigned int)cfg_ull(d->gpu, "remap_pending");
    *failure = (unsigned int)cfg_ull(d->gpu, "remap_failure");
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t d, unsigned int *value) {
    ENTER(d);
    NEED(value);
    *value = (unsigned int)cfg_ull(d->gpu, "pcie_replay");
    return NVML_SUCCESS;
}

#define NVML_FI_DEV_GET_GPU_RECOVERY_ACTION 230
#define NVML_VALUE_TYPE_UNSIGNED_INT 1

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t d, int count, nvmlFieldValue_t *values) {
    ENTER(d);
    NEED(values);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    for (int i = 0; i < count; i++) {
        nvmlFieldValue_t *v = &values[i];
        v->timestamp = (long long)now.tv_sec * 1000000LL + now.tv_nsec / 1000;
        v->latencyUsec = 0;
        if (v->fieldId == NVML_FI_DEV_GET_GPU_RECOVERY_ACTION &&
            !gpu_key_in_list(d->gpu, "unsupported", "NVML_FI_DEV_GET_GPU_RECOVERY_ACTION")) {
            v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
            v->value.uiVal = (unsigned int)cfg_ull(d->gpu, "recovery_action");
            v->nvmlReturn = NVML_SUCCESS;
        } else {
            v->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;
        }
    }
    return NVML_SUCCESS;
}

/* ---- NVLink: nvlink_count links, "nvlink_down = 3,7" inactive, counters per link ---- */

static int link_count(int gpu) { return (int)cfg_ull(gpu, "nvlink_count"); }

static int link_active(int gpu, unsigned int link) {
    char name[16];
    snprintf(name, sizeof name, "%u", link);
    return !in_list(cfg(gpu, "nvlink_down"), name);
}

/* "bridge": link pairs GPU 2k with 2k+1 (PCIe cards with NVLink bridges); else NVSwitch. */
static int bridged(int gpu) {
    const char *mode = cfg(gpu, "nvlink_remote");
    return mode != NULL && strcmp(mode, "bridge") == 0;
}

nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t d, unsigned int link, unsigned int *active) {
    ENTER(d);
    NEED(active);
    int n = link_count(d->gpu);
    if (n == 0) return NVML_ERROR_NOT_SUPPORTED;
    if (link >= (unsigned int)n || link >= MAX_LINKS) return NVML_ERROR_INVALID_ARGUMENT;
    *active = (unsigned int)link_active(d->gpu, link);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkErrorCounter(nvmlDevice_t d, unsigned int link, int counter,
                                             unsigned long long *value) {
    ENTER(d);
    NEED(value);
    static const char *const names[] = {"replay", "recovery", "crc_flit", "crc_data"};
    int n = link_count(d->gpu);
    if (n == 0) return NVML_ERROR_NOT_SUPPORTED;
    if (link >= (unsigned int)n) return NVML_ERROR_INVALID_ARGUMENT;
    if (counter < 0 || counter > 3) return NVML_ERROR_NOT_SUPPORTED;
    char key[64];
    snprintf(key, sizeof key, "nvlink.%u.%s", link, names[counter]);
    *value = cfg_ull(d->gpu, key);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t d, unsigned int link,
                                                 nvmlPciInfo_t *pci) {
    ENTER(d);
    NEED(pci);
    int n = link_count(d->gpu);
    if (n == 0) return NVML_ERROR_NOT_SUPPORTED;
    if (link >= (unsigned int)n) return NVML_ERROR_INVALID_ARGUMENT;
    if (bridged(d->gpu) && (d->gpu ^ 1) < gpu_count) {
        fill_pci(d->gpu ^ 1, pci);
        return NVML_SUCCESS;
    }
    /* An NVSwitch: four of them, links spread across. */
    memset(pci, 0, sizeof *pci);
    pci->bus = 0x05 + (link % 4);
    pci->pciDeviceId = 0x22A310DE;
    snprintf(pci->busId, sizeof pci->busId, "00000000:%02X:00.0", pci->bus);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "0000:%02X:00.0", pci->bus);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(nvmlDevice_t d, unsigned int link, int *type) {
    ENTER(d);
    NEED(type);
    int n = link_count(d->gpu);
    if (n == 0) return NVML_ERROR_NOT_SUPPORTED;
    if (link >= (unsigned int)n) return NVML_ERROR_INVALID_ARGUMENT;
    *type = bridged(d->gpu) ? 0 /* GPU */ : 2 /* SWITCH */;
    return NVML_SUCCESS;
}

static int active_links(int gpu) {
    int n = link_count(gpu), active = 0;
    for (int l = 0; l < n; l++) active += link_active(gpu, (unsigned int)l);
    return active;
}

nvmlReturn_t nvmlDeviceGetP2PStatus(nvmlDevice_t a, nvmlDevice_t b, int index, int *status) {
    ENTER(a);
    ENTER(b);
    NEED(status);
    if (index == 2) { /* NVML_P2P_CAPS_INDEX_NVLINK */
        int linked = active_links(a->gpu) > 0 && active_links(b->gpu) > 0 &&
                     (!bridged(a->gpu) || (a->gpu ^ 1) == b->gpu);
        *status = linked ? 0 : 5; /* OK : NOT_SUPPORTED */
    } else {
        *status = 0;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTopologyCommonAncestor(nvmlDevice_t a, nvmlDevice_t b, int *level) {
    ENTER(a);
    ENTER(b);
    NEED(level);
    /* Two CPU sockets of four GPUs each: NODE within one, SYSTEM across. */
    if (a->gpu == b->gpu)
        *level = 0;
    else
        *level = (a->gpu / 4 == b->gpu / 4) ? 40 : 50;
    return NVML_SUCCESS;
}

/* ---- processes: "gpu.N.processes = pid:name:MiB[:GI[:CI]],..." ---- */

/* The optional ":GI[:CI]" after a process's MiB: its MIG GPU and compute instance
   (0xFFFFFFFF, NVML's "not MIG", when absent; CI defaults to 0 once GI is given). */
static void process_instances(const char *entry, unsigned int *gi, unsigned int *ci) {
    *gi = *ci = 0xFFFFFFFFU;
    const char *comma = strchr(entry, ',');
    const char *end = comma != NULL ? comma : entry + strlen(entry);
    const char *c = entry;
    for (int colons = 0; c < end; c++) {
        if (*c == ':' && ++colons == 3) break;
    }
    if (c >= end) return;
    char *after;
    *gi = (unsigned int)strtoul(c + 1, &after, 10);
    *ci = (*after == ':' && after < end) ? (unsigned int)strtoul(after + 1, NULL, 10) : 0;
}

static nvmlReturn_t list_processes(nvmlDevice_t d, const char *key, unsigned int *count,
                                   nvmlProcessInfo_t *infos) {
    NEED(count);
    const char *list = cfg(d->gpu, key);
    unsigned int n = 0;
    nvmlProcessInfo_t found[64];
    const char *p = list;
    while (p != NULL && *p && n < 64) {
        while (*p == ',' || isspace((unsigned char)*p)) p++;
        if (!*p) break;
        unsigned int pid = (unsigned int)strtoul(p, NULL, 10);
        unsigned long long mib = 0;
        if (find_process(p, pid, NULL, 0, &mib)) {
            found[n].pid = pid;
            found[n].usedGpuMemory = mib << 20;
            process_instances(p, &found[n].gpuInstanceId, &found[n].computeInstanceId);
            n++;
        }
        p = strchr(p, ',');
    }
    if (n == 0) {
        *count = 0;
        return NVML_SUCCESS;
    }
    if (infos == NULL || *count < n) {
        *count = n;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    memcpy(infos, found, n * sizeof found[0]);
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    ENTER(d);
    return list_processes(d, "processes", count, infos);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                      nvmlProcessInfo_t *infos) {
    ENTER(d);
    return list_processes(d, "graphics_processes", count, infos);
}
