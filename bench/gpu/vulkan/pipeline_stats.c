/* A Vulkan layer that writes down, for every compute pipeline an application creates (Dawn under
 * dawn.node, wgpu-py), what the driver made of it: the statistics of its executables
 * (VK_KHR_pipeline_executable_properties: on NVIDIA registers per thread, and so how many
 * workgroups share a multiprocessor) and the SPIR-V it came from. The timings of
 * docs/performance.md could not say what holds a kernel (2026-12-01 05:03); these can.
 *
 * Enabled by the loader from the environment (bench/gpu/vulkan/build.sh writes the manifest):
 *   VK_LAYER_PATH=<dir of the manifest> VK_INSTANCE_LAYERS=VK_LAYER_KUMA_pipeline_stats
 *   KUMA_PIPELINE_STATS=<folder>   (default: pipeline-stats in the working directory)
 * Into the folder: shader-<hash>.spv, each distinct module's SPIR-V once (spirv-dis reads it), and
 * pipelines.jsonl, a line per distinct (module, entry point) compiled:
 *   {"shader": "<hash>", "entry": "main", "words": N, "executables": [{"name": ..., "subgroup": 32,
 *    "stats": {"Register Count": 96, ...}, "representations": [{"name": ..., "file": ...}]}]}
 * with the driver's internal representations of each executable (where it gives any: machine code
 * or text) in shader-<hash>-<i>.bin or .txt.
 * or "executables": null where the device lacks the extension (lavapipe, SwiftShader): the SPIR-V is
 * still written. The layer adds the extension and its feature to the device it creates, and the
 * capture flag to each compute pipeline; nothing else changes, so what runs is what ran before.
 */

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <vulkan/vk_layer.h>
#include <vulkan/vulkan.h>

#define LAYER_NAME "VK_LAYER_KUMA_pipeline_stats"
#define EXTENSION VK_KHR_PIPELINE_EXECUTABLE_PROPERTIES_EXTENSION_NAME
#define MAX_OBJECTS 64      /* instances and devices alive at once */
#define MAX_MODULES 65536   /* shader modules a process creates */
#define EXPORT __attribute__((visibility("default")))

/* the loader's dispatch table pointer: the key shared by an instance and its physical devices,
   and by a device and its queues and command buffers */
static void *key(const void *handle) { return *(void **)handle; }

struct instance { void *key; VkInstance handle; PFN_vkGetInstanceProcAddr next; };
struct device {
    void *key; VkDevice handle; PFN_vkGetDeviceProcAddr next; int captures;
    PFN_vkCreateShaderModule create_shader_module;
    PFN_vkCreateComputePipelines create_compute_pipelines;
    PFN_vkGetPipelineExecutablePropertiesKHR executables;
    PFN_vkGetPipelineExecutableStatisticsKHR statistics;
    PFN_vkGetPipelineExecutableInternalRepresentationsKHR representations;
};
struct module { VkShaderModule handle; uint64_t hash; uint32_t words; };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct instance instances[MAX_OBJECTS];
static struct device devices[MAX_OBJECTS];
static struct module modules[MAX_MODULES];
static uint32_t module_count;
static uint64_t written[MAX_MODULES * 2];  /* (hash, entry hash) pairs already in pipelines.jsonl */
static uint32_t written_count;

static struct instance *instance_of(const void *handle) {
    for (int i = 0; i < MAX_OBJECTS; i++)
        if (instances[i].key == key(handle)) return &instances[i];
    return NULL;
}

static struct device *device_of(const void *handle) {
    for (int i = 0; i < MAX_OBJECTS; i++)
        if (devices[i].key == key(handle)) return &devices[i];
    return NULL;
}

static uint64_t fnv1a(const void *data, size_t size) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < size; i++) h = (h ^ ((const uint8_t *)data)[i]) * 1099511628211ull;
    return h;
}

static const char *folder(void) {
    const char *dir = getenv("KUMA_PIPELINE_STATS");
    dir = dir && *dir ? dir : "pipeline-stats";
    mkdir(dir, 0755);
    return dir;
}

static void json_string(FILE *out, const char *s) {  /* the driver's names and descriptions */
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', out);
        if ((unsigned char)*s >= 0x20) fputc(*s, out);
    }
    fputc('"', out);
}

/* ---- instance ---- */

static VKAPI_ATTR VkResult VKAPI_CALL create_instance(const VkInstanceCreateInfo *info, const VkAllocationCallbacks *alloc,
                                                      VkInstance *out) {
    VkLayerInstanceCreateInfo *link = (VkLayerInstanceCreateInfo *)info->pNext;
    while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO && link->function == VK_LAYER_LINK_INFO))
        link = (VkLayerInstanceCreateInfo *)link->pNext;
    if (!link) return VK_ERROR_INITIALIZATION_FAILED;
    PFN_vkGetInstanceProcAddr next = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    link->u.pLayerInfo = link->u.pLayerInfo->pNext;  /* the next layer's link, for the layer below */
    PFN_vkCreateInstance create = (PFN_vkCreateInstance)next(VK_NULL_HANDLE, "vkCreateInstance");
    VkResult result = create(info, alloc, out);
    if (result != VK_SUCCESS) return result;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_OBJECTS; i++)
        if (!instances[i].key) { instances[i] = (struct instance){key(*out), *out, next}; break; }
    pthread_mutex_unlock(&lock);
    return result;
}

static VKAPI_ATTR void VKAPI_CALL destroy_instance(VkInstance instance, const VkAllocationCallbacks *alloc) {
    struct instance *in = instance_of(instance);
    PFN_vkDestroyInstance destroy = (PFN_vkDestroyInstance)in->next(instance, "vkDestroyInstance");
    pthread_mutex_lock(&lock);
    in->key = NULL;
    pthread_mutex_unlock(&lock);
    destroy(instance, alloc);
}

/* ---- device ---- */

static int supports(struct instance *in, VkPhysicalDevice gpu) {
    PFN_vkEnumerateDeviceExtensionProperties list =
        (PFN_vkEnumerateDeviceExtensionProperties)in->next(in->handle, "vkEnumerateDeviceExtensionProperties");
    uint32_t count = 0;
    list(gpu, NULL, &count, NULL);
    VkExtensionProperties *props = calloc(count, sizeof *props);
    list(gpu, NULL, &count, props);
    int found = 0;
    for (uint32_t i = 0; i < count; i++) found |= !strcmp(props[i].extensionName, EXTENSION);
    free(props);
    return found;
}

static VKAPI_ATTR VkResult VKAPI_CALL create_device(VkPhysicalDevice gpu, const VkDeviceCreateInfo *info,
                                                    const VkAllocationCallbacks *alloc, VkDevice *out) {
    VkLayerDeviceCreateInfo *link = (VkLayerDeviceCreateInfo *)info->pNext;
    while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO && link->function == VK_LAYER_LINK_INFO))
        link = (VkLayerDeviceCreateInfo *)link->pNext;
    if (!link) return VK_ERROR_INITIALIZATION_FAILED;
    PFN_vkGetInstanceProcAddr next_instance = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    PFN_vkGetDeviceProcAddr next = link->u.pLayerInfo->pfnNextGetDeviceProcAddr;
    link->u.pLayerInfo = link->u.pLayerInfo->pNext;
    struct instance *in = instance_of(gpu);
    PFN_vkCreateDevice create = (PFN_vkCreateDevice)next_instance(in->handle, "vkCreateDevice");

    /* the extension and its feature added to what the application asked for */
    VkDeviceCreateInfo copy = *info;
    VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR feature = {
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR, (void *)info->pNext, VK_TRUE};
    const char **names = calloc(info->enabledExtensionCount + 1, sizeof *names);
    int captures = supports(in, gpu), asked = 0;
    for (uint32_t i = 0; i < info->enabledExtensionCount; i++) {
        names[i] = info->ppEnabledExtensionNames[i];
        asked |= !strcmp(names[i], EXTENSION);
    }
    if (captures) {
        if (!asked) names[copy.enabledExtensionCount++] = EXTENSION;
        copy.ppEnabledExtensionNames = names;
        copy.pNext = &feature;
    }
    VkResult result = create(gpu, &copy, alloc, out);
    free(names);
    if (result != VK_SUCCESS) return result;
    struct device d = {key(*out), *out, next, captures,
                       (PFN_vkCreateShaderModule)next(*out, "vkCreateShaderModule"),
                       (PFN_vkCreateComputePipelines)next(*out, "vkCreateComputePipelines"),
                       captures ? (PFN_vkGetPipelineExecutablePropertiesKHR)next(*out, "vkGetPipelineExecutablePropertiesKHR") : NULL,
                       captures ? (PFN_vkGetPipelineExecutableStatisticsKHR)next(*out, "vkGetPipelineExecutableStatisticsKHR") : NULL,
                       captures ? (PFN_vkGetPipelineExecutableInternalRepresentationsKHR)next(*out, "vkGetPipelineExecutableInternalRepresentationsKHR") : NULL};
    pthread_mutex_lock(&lock);
    for (int i = 0; i < MAX_OBJECTS; i++)
        if (!devices[i].key) { devices[i] = d; break; }
    pthread_mutex_unlock(&lock);
    fprintf(stderr, "[%s] device created; %s\n", LAYER_NAME, captures ? "capturing pipeline statistics" : EXTENSION " missing: SPIR-V only");
    return result;
}

static VKAPI_ATTR void VKAPI_CALL destroy_device(VkDevice device, const VkAllocationCallbacks *alloc) {
    struct device *d = device_of(device);
    PFN_vkDestroyDevice destroy = (PFN_vkDestroyDevice)d->next(device, "vkDestroyDevice");
    pthread_mutex_lock(&lock);
    d->key = NULL;
    pthread_mutex_unlock(&lock);
    destroy(device, alloc);
}

static VKAPI_ATTR VkResult VKAPI_CALL create_shader_module(VkDevice device, const VkShaderModuleCreateInfo *info,
                                                           const VkAllocationCallbacks *alloc, VkShaderModule *out) {
    struct device *d = device_of(device);
    VkResult result = d->create_shader_module(device, info, alloc, out);
    if (result != VK_SUCCESS) return result;
    uint64_t hash = fnv1a(info->pCode, info->codeSize);
    char path[4096];
    snprintf(path, sizeof path, "%s/shader-%016llx.spv", folder(), (unsigned long long)hash);
    pthread_mutex_lock(&lock);
    if (module_count < MAX_MODULES) modules[module_count++] = (struct module){*out, hash, (uint32_t)(info->codeSize / 4)};
    struct stat seen;
    if (stat(path, &seen) != 0) {
        FILE *f = fopen(path, "wb");
        if (f) { fwrite(info->pCode, 1, info->codeSize, f); fclose(f); }
    }
    pthread_mutex_unlock(&lock);
    return result;
}

static struct module *module_of(VkShaderModule handle) {  /* the latest module with this handle */
    for (uint32_t i = module_count; i-- > 0;)
        if (modules[i].handle == handle) return &modules[i];
    return NULL;
}

/* the driver's own forms of an executable (NVIDIA: its machine code, for nvdisasm), each into
   shader-<hash>-<i>.txt or .bin beside the SPIR-V; their names, descriptions and files listed in out */
static void write_representations(struct device *d, const VkPipelineExecutableInfoKHR *exe, uint64_t hash, FILE *out) {
    uint32_t count = 0;
    if (d->representations(d->handle, exe, &count, NULL) < 0 || !count) return;
    VkPipelineExecutableInternalRepresentationKHR *reps = calloc(count, sizeof *reps);
    for (uint32_t i = 0; i < count; i++) reps[i].sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INTERNAL_REPRESENTATION_KHR;
    d->representations(d->handle, exe, &count, reps);  /* the sizes */
    for (uint32_t i = 0; i < count; i++) reps[i].pData = malloc(reps[i].dataSize ? reps[i].dataSize : 1);
    d->representations(d->handle, exe, &count, reps);  /* the data */
    for (uint32_t i = 0; i < count; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/shader-%016llx-%u.%s", folder(), (unsigned long long)hash, i, reps[i].isText ? "txt" : "bin");
        FILE *f = fopen(path, "wb");
        if (f) {
            /* text comes with its terminating zero */
            fwrite(reps[i].pData, 1, reps[i].isText && reps[i].dataSize ? reps[i].dataSize - 1 : reps[i].dataSize, f);
            fclose(f);
        }
        fputs(i ? ", {\"name\": " : "{\"name\": ", out);
        json_string(out, reps[i].name);
        fputs(", \"description\": ", out);
        json_string(out, reps[i].description);
        fprintf(out, ", \"file\": \"shader-%016llx-%u.%s\", \"bytes\": %zu}", (unsigned long long)hash, i, reps[i].isText ? "txt" : "bin", reps[i].dataSize);
        free(reps[i].pData);
    }
    free(reps);
}

static void record(struct device *d, VkPipeline pipeline, const VkComputePipelineCreateInfo *info) {
    pthread_mutex_lock(&lock);
    struct module *m = module_of(info->stage.module);
    uint64_t entry = fnv1a(info->stage.pName, strlen(info->stage.pName));
    for (uint32_t i = 0; m && i < written_count; i += 2)
        if (written[i] == m->hash && written[i + 1] == entry) { pthread_mutex_unlock(&lock); return; }
    char path[4096];
    snprintf(path, sizeof path, "%s/pipelines.jsonl", folder());
    FILE *out = fopen(path, "a");
    if (!out) { pthread_mutex_unlock(&lock); return; }
    fprintf(out, "{\"shader\": \"%016llx\", \"entry\": ", m ? (unsigned long long)m->hash : 0ull);
    json_string(out, info->stage.pName);
    fprintf(out, ", \"words\": %u, \"executables\": ", m ? m->words : 0);
    if (!d->captures) {
        fputs("null", out);
    } else {
        VkPipelineInfoKHR which = {VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, NULL, pipeline};
        VkPipelineExecutablePropertiesKHR props[16];  /* a compute pipeline has one */
        uint32_t count = 16;
        for (uint32_t i = 0; i < count; i++) props[i] = (VkPipelineExecutablePropertiesKHR){.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR};
        if (d->executables(d->handle, &which, &count, props) < 0) count = 0;
        fputc('[', out);
        for (uint32_t e = 0; e < count; e++) {
            VkPipelineExecutableInfoKHR exe = {VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR, NULL, pipeline, e};
            uint32_t stats = 0;
            d->statistics(d->handle, &exe, &stats, NULL);
            VkPipelineExecutableStatisticKHR *stat = calloc(stats ? stats : 1, sizeof *stat);
            for (uint32_t i = 0; i < stats; i++) stat[i].sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR;
            d->statistics(d->handle, &exe, &stats, stat);
            fprintf(out, "%s{\"name\": ", e ? ", " : "");
            json_string(out, props[e].name);
            fprintf(out, ", \"subgroup\": %u, \"stats\": {", props[e].subgroupSize);
            for (uint32_t i = 0; i < stats; i++) {
                fputs(i ? ", " : "", out);
                json_string(out, stat[i].name);
                switch (stat[i].format) {
                case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR: fprintf(out, ": %s", stat[i].value.b32 ? "true" : "false"); break;
                case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR: fprintf(out, ": %lld", (long long)stat[i].value.i64); break;
                case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR: fprintf(out, ": %llu", (unsigned long long)stat[i].value.u64); break;
                default: fprintf(out, ": %g", stat[i].value.f64); break;
                }
            }
            fputs("}, \"representations\": [", out);
            write_representations(d, &exe, m ? m->hash : 0, out);
            fputs("]}", out);
            free(stat);
        }
        fputc(']', out);
    }
    fputs("}\n", out);
    fclose(out);
    if (m && written_count + 2 <= sizeof written / sizeof *written) {
        written[written_count++] = m->hash;
        written[written_count++] = entry;
    }
    pthread_mutex_unlock(&lock);
}

static VKAPI_ATTR VkResult VKAPI_CALL create_compute_pipelines(VkDevice device, VkPipelineCache cache, uint32_t count,
                                                               const VkComputePipelineCreateInfo *infos,
                                                               const VkAllocationCallbacks *alloc, VkPipeline *out) {
    struct device *d = device_of(device);
    VkComputePipelineCreateInfo *copies = calloc(count, sizeof *copies);
    for (uint32_t i = 0; i < count; i++) {
        copies[i] = infos[i];
        if (d->captures)
            copies[i].flags |= VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR | VK_PIPELINE_CREATE_CAPTURE_INTERNAL_REPRESENTATIONS_BIT_KHR;
    }
    VkResult result = d->create_compute_pipelines(device, cache, count, copies, alloc, out);
    for (uint32_t i = 0; i < count; i++)
        if (out[i] != VK_NULL_HANDLE) record(d, out[i], &copies[i]);
    free(copies);
    return result;
}

/* ---- lookups ---- */

struct entry { const char *name; PFN_vkVoidFunction fn; };
static const struct entry intercepted[] = {  /* the first 3 are device-level: vkGetDeviceProcAddr answers them too */
    {"vkDestroyDevice", (PFN_vkVoidFunction)destroy_device},
    {"vkCreateShaderModule", (PFN_vkVoidFunction)create_shader_module},
    {"vkCreateComputePipelines", (PFN_vkVoidFunction)create_compute_pipelines},
    {"vkCreateInstance", (PFN_vkVoidFunction)create_instance},
    {"vkDestroyInstance", (PFN_vkVoidFunction)destroy_instance},
    {"vkCreateDevice", (PFN_vkVoidFunction)create_device},
};

static PFN_vkVoidFunction ours(const char *name, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (!strcmp(name, intercepted[i].name)) return intercepted[i].fn;
    return NULL;
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL kuma_GetDeviceProcAddr(VkDevice device, const char *name) {
    if (!strcmp(name, "vkGetDeviceProcAddr")) return (PFN_vkVoidFunction)kuma_GetDeviceProcAddr;
    PFN_vkVoidFunction fn = ours(name, 3);
    return fn ? fn : device_of(device)->next(device, name);
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL kuma_GetInstanceProcAddr(VkInstance instance, const char *name) {
    if (!strcmp(name, "vkGetInstanceProcAddr")) return (PFN_vkVoidFunction)kuma_GetInstanceProcAddr;
    if (!strcmp(name, "vkGetDeviceProcAddr")) return (PFN_vkVoidFunction)kuma_GetDeviceProcAddr;
    PFN_vkVoidFunction fn = ours(name, sizeof intercepted / sizeof *intercepted);
    if (fn || !instance) return fn;
    return instance_of(instance)->next(instance, name);
}

EXPORT VKAPI_ATTR VkResult VKAPI_CALL vkNegotiateLoaderLayerInterfaceVersion(VkNegotiateLayerInterface *version) {
    if (version->loaderLayerInterfaceVersion < 2) return VK_ERROR_INITIALIZATION_FAILED;
    version->loaderLayerInterfaceVersion = 2;
    version->pfnGetInstanceProcAddr = kuma_GetInstanceProcAddr;
    version->pfnGetDeviceProcAddr = kuma_GetDeviceProcAddr;
    version->pfnGetPhysicalDeviceProcAddr = NULL;
    return VK_SUCCESS;
}
