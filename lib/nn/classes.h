/* Internal: the class embedding rows the nets add to their time embedding. */
#ifndef DIFFUSE_NN_CLASSES_H
#define DIFFUSE_NN_CLASSES_H

#include <stddef.h>
#include <stdint.h>

/* The row of a label in a [classes + 1][E] class embedding: the label
 * itself, or the last row for DIFFUSE_LABEL_NONE (any negative value; the
 * callers have checked the labels). */
static inline size_t diffuse__class_row(int32_t label, size_t classes)
{
    return label < 0 ? classes : (size_t)label;
}

#endif
